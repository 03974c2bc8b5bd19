/**
 * Plots as SVG: a Vega-Lite spec per plot, rendered headless by Vega (no browser, no canvas).
 * Each point carries an aria-label with its step, value and series, so the SVG can be read
 * back (the browser test checks the plotted values against metrics.jsonl).
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

import type { PlotDefinition, SeriesRow, StageSpan } from "./series";

// Size of the plotting area in px (axes, title and legend come on top).
const WIDTH = 560;
const HEIGHT = 200;

/**
 * A line plot over steps, one colour per series; points mark every logged step (a run of
 * one step still shows). With several stages, each stage is a shaded band named above the
 * plot, and lines do not join across a stage boundary.
 */
export function plotSpec(plot: PlotDefinition, rows: SeriesRow[], spans: StageSpan[]): TopLevelSpec {
  const domain = [spans[0].firstStep - 0.5, spans[spans.length - 1].lastStep + 0.5];
  const x = {
    field: "step",
    type: "quantitative" as const,
    title: "step",
    scale: { domain, nice: false, zero: false },
    axis: { tickMinStep: 1, format: "d" },
  };
  const labels = plot.series.map((s) => s.label);
  const layers: NonNullable<Extract<TopLevelSpec, { layer: unknown }>["layer"]> = [];
  if (spans.length > 1) {
    const bands = spans.map((s, i) => ({ stage: s.stage, start: s.firstStep - 0.5, end: s.lastStep + 0.5, middle: (s.firstStep + s.lastStep) / 2, shade: i % 2 }));
    layers.push(
      {
        data: { values: bands },
        mark: { type: "rect", color: "#6b7280", aria: false },
        encoding: {
          x: { ...x, field: "start" },
          x2: { field: "end" },
          opacity: { field: "shade", type: "quantitative", scale: { domain: [0, 1], range: [0.06, 0.13] }, legend: null },
        },
      },
      {
        data: { values: bands },
        mark: { type: "text", y: -4, baseline: "bottom", color: "#374151", fontSize: 11, aria: false },
        encoding: { x: { ...x, field: "middle" }, text: { field: "stage" } },
      },
    );
  }
  layers.push({
    data: { values: rows },
    mark: { type: "line", strokeWidth: 2, point: { filled: true, size: 40 } },
    encoding: {
      x,
      y: { field: "value", type: "quantitative", title: plot.yTitle, scale: { zero: false } },
      color: {
        field: "series",
        type: "nominal",
        title: null,
        scale: { domain: labels },
        legend: labels.length > 1 ? { orient: "bottom", direction: "horizontal" } : null,
      },
      detail: { field: "stage", type: "nominal" },
    },
  });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: { text: plot.title, anchor: "start" },
    width: WIDTH,
    height: HEIGHT,
    background: "white",
    config: { font: "Helvetica, Arial, sans-serif", view: { stroke: "#d1d5db" } },
    layer: layers,
  };
}

/** Renders a Vega-Lite spec to a standalone SVG document (inline data only: nothing is fetched). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
