/**
 * The report page: one self-contained HTML file (inline CSS and SVG, no scripts, nothing
 * fetched when opened) with the run's facts, its evaluation tables and its plots.
 */
import type { RecordedEvaluation, RunData } from "./run-data";
import type { PlotDefinition } from "./series";

export interface RenderedPlot {
  plot: PlotDefinition;
  svg: string;
}

export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** The self-correction metrics of docs/methods.md §8 (lib/evaluate.ts), in table order. */
const EVAL_COLUMNS: { key: string; header: string; kind: "count" | "fraction" | "signed" }[] = [
  { key: "count", header: "n", kind: "count" },
  { key: "accT1", header: "Acc@t1", kind: "fraction" },
  { key: "accT2", header: "Acc@t2", kind: "fraction" },
  { key: "delta", header: "Δ(t1,t2)", kind: "signed" },
  { key: "deltaIncorrectToCorrect", header: "Δi→c", kind: "fraction" },
  { key: "deltaCorrectToIncorrect", header: "Δc→i", kind: "fraction" },
  { key: "markerRate", header: "marker rate", kind: "fraction" },
];

function formatCell(value: unknown, kind: "count" | "fraction" | "signed"): string {
  if (typeof value !== "number") return "–";
  if (!Number.isFinite(value)) return String(value);
  if (kind === "count") return String(value);
  const percent = `${(100 * value).toFixed(1)}%`;
  return kind === "signed" && value > 0 ? `+${percent}` : percent;
}

function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : Number(value.toPrecision(4)).toString();
}

/** Numeric leaves of an evaluation object outside the table's columns, by dotted path (pass@k, per-round accuracy, …). */
export function extraNumericLeaves(metrics: Record<string, unknown>): Map<string, number> {
  const leaves = new Map<string, number>();
  const known = new Set(EVAL_COLUMNS.map((c) => c.key));
  const visit = (value: unknown, path: string) => {
    if (typeof value === "number") leaves.set(path, value);
    else if (Array.isArray(value)) value.forEach((v, i) => visit(v, `${path}[${i}]`));
    else if (typeof value === "object" && value !== null)
      for (const [k, v] of Object.entries(value)) visit(v, path ? `${path}.${k}` : k);
  };
  for (const [key, value] of Object.entries(metrics)) if (!known.has(key)) visit(value, key);
  return leaves;
}

function evaluationTable(rows: { label: string; metrics: Record<string, unknown> }[], firstHeader: string): string {
  const head = `<tr><th>${escapeHtml(firstHeader)}</th>${EVAL_COLUMNS.map((c) => `<th>${escapeHtml(c.header)}</th>`).join("")}</tr>`;
  const body = rows
    .map((r) => `<tr><th scope="row">${escapeHtml(r.label)}</th>${EVAL_COLUMNS.map((c) => `<td>${formatCell(r.metrics[c.key], c.kind)}</td>`).join("")}</tr>`)
    .join("\n");
  return `<table>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

/** Further numbers the evaluations carry (one column per evaluation), when there are any. */
function extraMetricsTable(rows: { label: string; metrics: Record<string, unknown> }[]): string {
  const leaves = rows.map((r) => extraNumericLeaves(r.metrics));
  const paths = [...new Set(leaves.flatMap((l) => [...l.keys()]))];
  if (paths.length === 0) return "";
  const head = `<tr><th>metric</th>${rows.map((r) => `<th>${escapeHtml(r.label)}</th>`).join("")}</tr>`;
  const body = paths
    .map((p) => `<tr><th scope="row"><code>${escapeHtml(p)}</code></th>${leaves.map((l) => `<td>${l.has(p) ? formatNumber(l.get(p)!) : "–"}</td>`).join("")}</tr>`)
    .join("\n");
  return `<details><summary>more metrics</summary>\n<table>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>\n</details>`;
}

/** The scalar fields of a summary.json (steps, seconds, flags, paths), as a definition list. */
function summaryFacts(summary: Record<string, unknown> | undefined): string {
  if (!summary) return "";
  const facts = Object.entries(summary).filter(([, v]) => ["number", "string", "boolean"].includes(typeof v));
  if (facts.length === 0) return "";
  const item = ([k, v]: [string, unknown]) =>
    `<div><dt>${escapeHtml(k)}</dt><dd>${escapeHtml(typeof v === "number" ? formatNumber(v) : String(v))}</dd></div>`;
  return `<dl>${facts.map(item).join("")}</dl>`;
}

const STYLE = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #111827; margin: 24px auto; max-width: 1320px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.meta { color: #4b5563; margin: 0; } code { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; } thead th { background: #f3f4f6; } tbody th { text-align: left; font-weight: 500; }
dl { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 6px 0; } dl div { display: flex; gap: 6px; } dt { color: #6b7280; } dd { margin: 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px; background: white; }
figure svg { max-width: 100%; height: auto; display: block; } figcaption { color: #4b5563; font-size: 12px; margin-top: 4px; }
.missing { color: #6b7280; }
`;

export interface ReportPage {
  run: RunData;
  plots: RenderedPlot[];
  /** plots left out: no step of the run logged their metrics */
  emptyPlots: PlotDefinition[];
  /** relative path of the folder holding the SVG files, for the caption links */
  plotsFolder: string;
  generatedAt: Date;
}

export function renderReportHtml(page: ReportPage): string {
  const { run } = page;
  const staged = run.stages.length > 1 || run.stages[0].name !== "";
  const stepsLine = run.stages
    .map((s) => {
      const first = s.stepOffset + s.metrics[0].step, last = s.stepOffset + s.metrics[s.metrics.length - 1].step;
      return `${s.name || "training"}: ${s.metrics.length} logged step${s.metrics.length === 1 ? "" : "s"} (run steps ${first}–${last})`;
    })
    .join("; ");
  const sections: string[] = [];

  sections.push(`<h2>Run</h2>\n<p class="meta">${escapeHtml(stepsLine)}</p>\n${summaryFacts(run.summary)}`);
  if (staged)
    for (const s of run.stages) {
      const facts = summaryFacts(s.summary);
      if (facts) sections.push(`<h3>${escapeHtml(s.name)}</h3>\n${facts}`);
    }

  const evalRows: RecordedEvaluation[] = run.evaluations;
  const stepEvals = run.stages.flatMap((s) =>
    s.metrics.filter((m) => m.eval).map((m) => ({ label: `${s.name ? `${s.name} ` : ""}step ${m.step}`, metrics: m.eval! })),
  );
  if (evalRows.length > 0 || stepEvals.length > 0) {
    sections.push("<h2>Evaluation</h2>");
    if (evalRows.length > 0) sections.push(`<h3>Recorded in summary.json</h3>\n${evaluationTable(evalRows, "model")}\n${extraMetricsTable(evalRows)}`);
    if (stepEvals.length > 0) sections.push(`<h3>During training (held-out split)</h3>\n${evaluationTable(stepEvals, "step")}\n${extraMetricsTable(stepEvals)}`);
    sections.push(`<p class="meta">Acc@t1: first attempt correct; Acc@t2: final answer correct; Δ = Acc@t2 − Acc@t1 = Δi→c − Δc→i (fractions of the whole set).</p>`);
  }

  const figures = page.plots
    .map(
      ({ plot, svg }) =>
        `<figure id="plot-${plot.id}" data-plot="${plot.id}">\n${svg}\n<figcaption>${plot.note ? `${escapeHtml(plot.note)} · ` : ""}<a href="${escapeHtml(`${page.plotsFolder}/${plot.id}.svg`)}">${escapeHtml(`${plot.id}.svg`)}</a></figcaption>\n</figure>`,
    )
    .join("\n");
  sections.push(`<h2>Over steps</h2>\n<div class="plots">\n${figures}\n</div>`);
  if (page.emptyPlots.length > 0)
    sections.push(`<p class="missing">Not logged by this run: ${page.emptyPlots.map((p) => escapeHtml(p.title.toLowerCase())).join(", ")}.</p>`);

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>octo-native report — ${escapeHtml(run.dir)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>octo-native run report</h1>
<p class="meta"><code>${escapeHtml(run.dir)}</code> · generated ${escapeHtml(page.generatedAt.toISOString())}</p>
${sections.join("\n")}
</body>
</html>
`;
}
