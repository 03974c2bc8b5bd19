/**
 * The report's plots as data: which metrics each plot shows, and the long-form rows
 * (one per step, series and value) they are drawn from. Pure functions over metrics lines.
 */
import type { CorrectionBucket } from "../methods/octopus/octopus";
import type { MetricsLine, Stage } from "./run-data";

/** One point of a plot: `step` on the run's axis (stages placed one after the other). */
export interface SeriesRow {
  step: number;
  /** the step within its stage, as metrics.jsonl numbers it */
  stageStep: number;
  stage: string;
  series: string;
  value: number;
}

export interface PlotSeries {
  label: string;
  value: (metrics: MetricsLine) => number | null | undefined;
}

export interface PlotDefinition {
  /** file name of its SVG, and its id in the HTML */
  id: string;
  title: string;
  yTitle: string;
  series: PlotSeries[];
  /** what the plot shows, under its title */
  note?: string;
}

const BUCKET_LABELS: Record<CorrectionBucket, string> = { w2c: "w→c", c2c: "c→c", c2w: "c→w", w2w: "w→w" };

/**
 * o1→o2 transition counts as rates: each bucket's share of the generated samples that
 * corrected themselves (emitted the marker), so the four sum to 1. Undefined for a step
 * in which no sample emitted the marker (no rate to plot, rather than a misleading 0).
 */
export function transitionRates(counts: Record<CorrectionBucket, number>): Record<CorrectionBucket, number> | undefined {
  const total = counts.w2c + counts.c2c + counts.c2w + counts.w2w;
  if (total === 0) return undefined;
  return { w2c: counts.w2c / total, c2c: counts.c2c / total, c2w: counts.c2w / total, w2w: counts.w2w / total };
}

/** A number from an `eval` object logged at a step (self-correction metrics, lib/evaluate.ts). */
const evalValue = (key: string) => (m: MetricsLine) => {
  const value = m.eval?.[key];
  return typeof value === "number" ? value : undefined;
};

export const PLOTS: PlotDefinition[] = [
  {
    id: "reward",
    title: "Reward",
    yTitle: "mean reward",
    note: "mean reward of the generated samples of each step",
    series: [{ label: "reward", value: (m) => m.reward }],
  },
  {
    id: "accuracy",
    title: "Accuracy of the generated samples",
    yTitle: "fraction of samples",
    note: "o1: the first attempt; final: o2 when the sample corrects itself, else o1; marker: samples that emit the self-correction marker",
    series: [
      { label: "o1 accuracy", value: (m) => m.accuracyO1 },
      { label: "final accuracy", value: (m) => m.accuracyFinal },
      { label: "marker rate", value: (m) => m.markerRate },
    ],
  },
  {
    id: "transitions",
    title: "o1 → o2 transitions",
    yTitle: "share of self-correcting samples",
    note: "among generated samples that emit the marker: wrong→correct, correct→correct, correct→wrong, wrong→wrong",
    series: (Object.keys(BUCKET_LABELS) as CorrectionBucket[]).map((bucket) => ({
      label: BUCKET_LABELS[bucket],
      value: (m: MetricsLine) => (m.transitions ? transitionRates(m.transitions)?.[bucket] : undefined),
    })),
  },
  { id: "kl", title: "KL to the reference", yTitle: "mean KL", series: [{ label: "KL", value: (m) => m.kl }] },
  { id: "entropy", title: "Entropy", yTitle: "mean token entropy (nats)", series: [{ label: "entropy", value: (m) => m.entropy }] },
  {
    id: "clip-fraction",
    title: "Clip fraction",
    yTitle: "fraction of tokens clipped",
    series: [{ label: "clip fraction", value: (m) => m.clipFraction }],
  },
  {
    id: "response-length",
    title: "Response length",
    yTitle: "mean tokens per generated sample",
    series: [{ label: "response length", value: (m) => m.responseLength }],
  },
  {
    id: "tokens-per-second",
    title: "Generation throughput",
    yTitle: "generated tokens / s",
    series: [{ label: "tokens/s", value: (m) => m.generationTokensPerSecond }],
  },
  {
    id: "eval",
    title: "Held-out evaluation during training",
    yTitle: "fraction of the eval set",
    note: "logged every run.evalEvery steps; Δ = Acc@t2 − Acc@t1 = Δi→c − Δc→i",
    series: [
      { label: "Acc@t1", value: evalValue("accT1") },
      { label: "Acc@t2", value: evalValue("accT2") },
      { label: "Δi→c", value: evalValue("deltaIncorrectToCorrect") },
      { label: "Δc→i", value: evalValue("deltaCorrectToIncorrect") },
    ],
  },
];

/** The points of one plot across the stages of a run; missing and non-finite values are left out. */
export function plotRows(plot: PlotDefinition, stages: Stage[]): SeriesRow[] {
  const rows: SeriesRow[] = [];
  for (const stage of stages)
    for (const metrics of stage.metrics)
      for (const series of plot.series) {
        const value = series.value(metrics);
        if (typeof value === "number" && Number.isFinite(value))
          rows.push({ step: stage.stepOffset + metrics.step, stageStep: metrics.step, stage: stage.name, series: series.label, value });
      }
  return rows;
}

/** Where each stage sits on the run's step axis. */
export interface StageSpan {
  stage: string;
  firstStep: number;
  lastStep: number;
}

export function stageSpans(stages: Stage[]): StageSpan[] {
  return stages.map((s) => ({
    stage: s.name,
    firstStep: s.stepOffset + s.metrics[0].step,
    lastStep: s.stepOffset + s.metrics[s.metrics.length - 1].step,
  }));
}
