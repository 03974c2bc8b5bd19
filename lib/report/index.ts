/**
 * `octo-native report RUN_DIR` (docs/methods.md §9): the run's HTML report, and each plot as an SVG
 * file in a `plots/` folder next to it. Written at the end of every training run and of the
 * demo; rerun it any time on a run directory (also while a run is going).
 */
import fs from "node:fs";
import path from "node:path";

import { writeFileAtomic } from "../util/atomic-file";
import { makeDirectory } from "../util/files";
import { plotSpec, renderSvg } from "./charts";
import { renderReportHtml, type RenderedPlot } from "./html";
import { readRun } from "./run-data";
import { PLOTS, plotRows, stageSpans, type PlotDefinition } from "./series";

export { ReportInputError, readRun, parseMetricsFile } from "./run-data";
export { PLOTS, plotRows, stageSpans, transitionRates } from "./series";

export interface ReportOptions {
  /** the HTML file (default RUN_DIR/report.html); the SVGs go to plots/ beside it */
  out?: string;
}

export interface WrittenReport {
  html: string;
  plotsDir: string;
  /** SVG files written, one per plot that has data */
  plots: string[];
  /** ids of plots left out because no step logged their metrics */
  emptyPlots: string[];
}

export async function writeRunReport(runDir: string, options: ReportOptions = {}): Promise<WrittenReport> {
  const run = readRun(runDir);
  const html = path.resolve(options.out ?? path.join(run.dir, "report.html"));
  const plotsDir = path.join(path.dirname(html), "plots");
  const spans = stageSpans(run.stages);

  const plots: RenderedPlot[] = [];
  const emptyPlots: PlotDefinition[] = [];
  for (const plot of PLOTS) {
    const rows = plotRows(plot, run.stages);
    if (rows.length === 0) emptyPlots.push(plot);
    else plots.push({ plot, svg: await renderSvg(plotSpec(plot, rows, spans)) });
  }

  // SVGs first, then the page that links them; each file replaced whole. SVGs of plots this
  // report no longer has are removed, so the folder always matches the page.
  makeDirectory(plotsDir, "the report's plot directory");
  const written = plots.map(({ plot, svg }) => {
    const file = path.join(plotsDir, `${plot.id}.svg`);
    writeFileAtomic(file, svg);
    return file;
  });
  for (const plot of emptyPlots) fs.rmSync(path.join(plotsDir, `${plot.id}.svg`), { force: true });
  writeFileAtomic(
    html,
    renderReportHtml({ run, plots, emptyPlots, plotsFolder: path.relative(path.dirname(html), plotsDir), generatedAt: new Date() }),
  );
  return { html, plotsDir, plots: written, emptyPlots: emptyPlots.map((p) => p.id) };
}

/**
 * The report at the end of a training run or the demo. A failure is said, not thrown: the
 * run's results are saved by then, and `octo-native report` can write it again.
 */
export async function writeReportAfterRun(runDir: string, log: (line: string) => void): Promise<string | undefined> {
  try {
    const report = await writeRunReport(runDir);
    log(`report: ${report.html}`);
    return report.html;
  } catch (error) {
    process.stderr.write(
      `octo-native: warning: the report of ${runDir} was not written (${(error as Error).message}); run \`octo-native report ${runDir}\` to retry\n`,
    );
    return undefined;
  }
}
