/**
 * metrics.jsonl: one JSON line per finished step (docs/methods.md §9). Appended as the run goes; a
 * resumed run cuts it back to the checkpoint's step. A crash or a full disk can tear the last line
 * (the kernel writes what fits): the cut drops it and says so, rather than refusing to resume.
 */
import fs from "node:fs";
import path from "node:path";

import { appendLine, fileError, writeFileAtomic } from "../util/atomic-file";
import { readRegularFile } from "../util/files";
import type { StepMetrics } from "./step";

/** A line read back: the step's metrics as JSON kept them (NaN and Infinity became null). */
export type MetricsLine = StepMetrics;

export function appendMetrics(file: string, metrics: StepMetrics): void {
  appendLine(file, JSON.stringify(metrics));
}

/**
 * Keeps the lines of steps <= `step` that come before any damaged line, rewrites the file when
 * that drops anything (`rewrite`: the writer; the other ranks only read, and read the same lines
 * from the file before or after the atomic rewrite), and returns the kept lines with a one-line
 * account of what was dropped.
 */
export function cutMetricsForResume(file: string, step: number, rewrite: boolean): { kept: MetricsLine[]; note?: string } {
  if (!fs.existsSync(file)) return { kept: [] };
  let text: string;
  try {
    text = readRegularFile(file, "utf8");
  } catch (error) {
    throw fileError(error, file, "read");
  }
  const lines = text.split("\n");
  const kept: MetricsLine[] = [];
  let torn: number | undefined;
  let later = 0;
  for (const [i, line] of lines.entries()) {
    if (line.trim() === "") continue;
    let parsed: MetricsLine;
    try {
      parsed = JSON.parse(line) as MetricsLine;
      if (typeof parsed?.step !== "number") throw new Error("no step");
    } catch {
      torn = i + 1;
      break;
    }
    if (parsed.step <= step) kept.push(parsed);
    else later++;
  }
  if (torn === undefined && later === 0) return { kept };
  if (rewrite) writeFileAtomic(file, kept.map((m) => JSON.stringify(m) + "\n").join(""));
  const name = path.basename(file);
  const dropped = [later > 0 ? `${later} line(s) of steps after ${step}` : "", torn !== undefined ? `a damaged line ${torn} (a crash or a full disk while writing) and what followed it` : ""].filter(Boolean).join(" and ");
  const lastKept = kept.length > 0 ? kept[kept.length - 1].step : 0;
  const gap = lastKept < step ? `; steps ${lastKept + 1}–${step} have no metrics line` : "";
  return { kept, note: `${name}: kept ${kept.length} line(s) up to step ${step} (the checkpoint's), dropped ${dropped}${gap}` };
}
