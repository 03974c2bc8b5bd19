/**
 * What a run directory holds for its report (docs/methods.md §9): the metrics.jsonl lines of a training
 * run — or of each stage of a staged run such as the embedded demo (stage1/, stage2/, …),
 * concatenated along the step axis — and the evaluations its summary.json files record.
 */
import fs from "node:fs";
import path from "node:path";

import { z } from "zod";

import { readRegularFile } from "../util/files";

/** Bad or missing report input; the message names the file (and line) and what to do. */
export class ReportInputError extends Error {
  override name = "ReportInputError";
}

// JSON has no NaN or Infinity: JSON.stringify writes a non-finite metric (a skipped step's
// loss) as null, so every plotted number may be null — a gap in its plot, not an error.
const metricValue = z.number().nullable().optional();
const count = z.number().min(0);

/** The fields of a `StepMetrics` line (lib/rl/step.ts) that the report reads; others pass through. */
const metricsLineSchema = z.looseObject({
  step: z.number().int().min(0),
  reward: metricValue,
  rewardStd: metricValue,
  accuracyO1: metricValue,
  accuracyFinal: metricValue,
  markerRate: metricValue,
  transitions: z.object({ w2c: count, c2c: count, c2w: count, w2w: count }).optional(),
  kl: metricValue,
  entropy: metricValue,
  clipFraction: metricValue,
  responseLength: metricValue,
  generationTokensPerSecond: metricValue,
  /** held-out evaluation logged at this step (run.evalEvery): self-correction metrics */
  eval: z.record(z.string(), z.unknown()).optional(),
});

export type MetricsLine = z.infer<typeof metricsLineSchema>;

/** One training run's worth of steps; a plain run has one stage with an empty name. */
export interface Stage {
  name: string;
  dir: string;
  metrics: MetricsLine[];
  summary?: Record<string, unknown>;
  /** added to this stage's steps to place them on the run's step axis */
  stepOffset: number;
}

/** An evaluation recorded in a summary.json, with the label its table row shows. */
export interface RecordedEvaluation {
  label: string;
  metrics: Record<string, unknown>;
}

export interface RunData {
  dir: string;
  stages: Stage[];
  summary?: Record<string, unknown>;
  evaluations: RecordedEvaluation[];
}

const METRICS_FILE = "metrics.jsonl";
const SUMMARY_FILE = "summary.json";
const STAGE_DIR = /^stage(\d+)$/;

function readRunFile(file: string): string {
  try {
    return readRegularFile(file, "utf8");
  } catch (error) {
    throw new ReportInputError(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

/** Parses a metrics.jsonl file; every problem names the file and line. */
export function parseMetricsFile(file: string): MetricsLine[] {
  if (!fs.existsSync(file)) throw new ReportInputError(`${file} not found`);
  const lines: MetricsLine[] = [];
  let previous: { step: number; line: number } | undefined;
  readRunFile(file)
    .split("\n")
    .forEach((text, index) => {
      const line = index + 1;
      if (text.trim() === "") return;
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch (error) {
        throw new ReportInputError(
          `${file} line ${line}: not valid JSON (${(error as Error).message}); a run killed while writing leaves a partial last line — delete that line`,
        );
      }
      const parsed = metricsLineSchema.safeParse(raw);
      if (!parsed.success) {
        const problems = parsed.error.issues.map((issue) => `key '${issue.path.join(".") || "(line)"}': ${issue.message}`);
        throw new ReportInputError(`${file} line ${line}: ${problems.join("; ")}`);
      }
      const metrics = parsed.data;
      if (previous && metrics.step <= previous.step)
        throw new ReportInputError(
          `${file} line ${line}: step ${metrics.step} comes after step ${previous.step} (line ${previous.line}); each step must appear once, in increasing order`,
        );
      previous = { step: metrics.step, line };
      lines.push(metrics);
    });
  if (lines.length === 0) throw new ReportInputError(`${file} holds no steps: the run has not finished a step yet`);
  return lines;
}

function readSummary(dir: string): Record<string, unknown> | undefined {
  const file = path.join(dir, SUMMARY_FILE);
  if (!fs.existsSync(file)) return undefined;
  const text = readRunFile(file);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ReportInputError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ReportInputError(`${file}: expected a JSON object`);
  return raw as Record<string, unknown>;
}

/** "afterStage1" → "after Stage 1", "afterSft" → "after SFT". */
export function humanizeKey(key: string): string {
  return key
    .replace(/([a-z])([A-Z0-9])/g, "$1 $2")
    .replace(/\bSft\b/g, "SFT")
    .replace(/\bRl\b/g, "RL");
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

/** Evaluations a summary.json records: `evaluations` {name: metrics} (the demo), `evalBefore`/`evalAfter` (a training run). */
function recordedEvaluations(summary: Record<string, unknown> | undefined, stageName: string): RecordedEvaluation[] {
  if (!summary) return [];
  const prefix = stageName ? `${stageName}: ` : "";
  const found: RecordedEvaluation[] = [];
  if (isRecord(summary.evaluations))
    for (const [key, metrics] of Object.entries(summary.evaluations)) if (isRecord(metrics)) found.push({ label: prefix + humanizeKey(key), metrics });
  if (isRecord(summary.evalBefore)) found.push({ label: `${prefix}before training`, metrics: summary.evalBefore });
  if (isRecord(summary.evalAfter)) found.push({ label: `${prefix}after training`, metrics: summary.evalAfter });
  return found;
}

/**
 * Reads a run directory: a training run (RUN_DIR/metrics.jsonl), or a staged run whose
 * stage<N>/ subdirectories are training runs, placed one after the other on the step axis.
 */
export function readRun(runDir: string): RunData {
  const dir = path.resolve(runDir);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new ReportInputError(`run directory ${dir} not found`);
  const summary = readSummary(dir);
  let stageDirs: { name: string; dir: string }[];
  if (fs.existsSync(path.join(dir, METRICS_FILE))) {
    stageDirs = [{ name: "", dir }];
  } else {
    stageDirs = fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && STAGE_DIR.test(entry.name))
      .map((entry) => ({ name: entry.name, number: Number(STAGE_DIR.exec(entry.name)![1]), dir: path.join(dir, entry.name) }))
      .sort((a, b) => a.number - b.number)
      .map(({ name, dir }) => ({ name, dir }));
    if (stageDirs.length === 0)
      throw new ReportInputError(
        `${path.join(dir, METRICS_FILE)} not found, nor stage directories (stage1/, stage2/, …) holding one: ` +
          `give the directory of a training run (run.dir of its config) or of the demo (train with no --config)`,
      );
  }
  const stages: Stage[] = [];
  let stepOffset = 0;
  for (const { name, dir: stageDir } of stageDirs) {
    const metrics = parseMetricsFile(path.join(stageDir, METRICS_FILE));
    const stageSummary = stageDir === dir ? summary : readSummary(stageDir);
    stages.push({ name, dir: stageDir, metrics, summary: stageSummary, stepOffset });
    stepOffset += metrics[metrics.length - 1].step;
  }
  const evaluations = [
    ...recordedEvaluations(summary, ""),
    ...stages.filter((s) => s.dir !== dir).flatMap((s) => recordedEvaluations(s.summary, s.name)),
  ];
  return { dir, stages, summary, evaluations };
}
