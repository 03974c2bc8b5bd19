/**
 * `octo-native grade` (docs/methods.md §7): JSONL of `{gold, pred, ...}` → the same lines with `correct` and
 * `method` added (and `grade_error` when the verifier could not compare the answers, or ran past the
 * per-answer budget; with `--explain`, `explain`: how both sides were read and why they are equal or not).
 * All lines are checked before anything is graded or written; the output file is written atomically
 * (temp file + rename), so a failed run never leaves half a file.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";

import { readRegularFile } from "../util/files";
import { gradeAnswer, type VerifyOptions } from "./verify";

export interface GradeSummary {
  total: number;
  correct: number;
  /** lines whose grading ran past the per-answer budget (judged incorrect; their `grade_error` says where) */
  timedOut: number;
}

export interface GradeCommandOptions extends VerifyOptions {
  /** JSONL file of `{gold, pred, ...}` objects */
  input: string;
  /** where to write the graded JSONL; stdout when absent */
  output?: string;
}

/** gold/pred may be numbers in real data (AMC answers are floats); anything else is an error. */
function answerField(record: Record<string, unknown>, name: "gold" | "pred"): string | undefined {
  const value = record[name];
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return undefined;
}

/**
 * Grade every line of `inputPath`; write the result to `outputPath` (atomically) or to stdout.
 * Rejects, before writing anything, when a line is not a JSON object with string/number `gold` and
 * `pred`; the error names the file and the line numbers (1-based).
 */
export async function gradeJsonl(inputPath: string, outputPath?: string, options: VerifyOptions = {}): Promise<GradeSummary> {
  const { timeoutMs } = options;
  if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new Error(`grade: the per-answer budget must be a positive number of milliseconds (--timeout-ms / timeoutMs), got ${timeoutMs}`);
  }
  let text: string;
  try {
    text = readRegularFile(inputPath, "utf8");
  } catch (e) {
    throw new Error(`cannot read grade input ${inputPath}: ${(e as Error).message}`);
  }
  const records: { line: number; record: Record<string, unknown>; gold: string; pred: string }[] = [];
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === "") return;
    let record: unknown;
    try {
      record = JSON.parse(raw);
    } catch (e) {
      problems.push(`${inputPath}:${line}: not valid JSON (${(e as Error).message})`);
      return;
    }
    if (typeof record !== "object" || record === null || Array.isArray(record)) {
      problems.push(`${inputPath}:${line}: expected a JSON object with "gold" and "pred", got ${Array.isArray(record) ? "an array" : typeof record}`);
      return;
    }
    const obj = record as Record<string, unknown>;
    const gold = answerField(obj, "gold");
    const pred = answerField(obj, "pred");
    const missing = [gold === undefined ? "gold" : "", pred === undefined ? "pred" : ""].filter(Boolean);
    if (missing.length > 0) {
      problems.push(`${inputPath}:${line}: missing or non-string ${missing.map((m) => `"${m}"`).join(" and ")}`);
      return;
    }
    records.push({ line, record: obj, gold: gold!, pred: pred! });
  });
  if (problems.length > 0) {
    const shown = problems.slice(0, 10).join("\n  ");
    const more = problems.length > 10 ? `\n  … and ${problems.length - 10} more` : "";
    throw new Error(`grade: ${problems.length} bad line(s); each line must be a JSON object like {"gold": "...", "pred": "..."}:\n  ${shown}${more}`);
  }

  let correct = 0;
  let timedOut = 0;
  const out: string[] = records.map(({ record, gold, pred }) => {
    const result = gradeAnswer(gold, pred, options);
    if (result.correct) correct++;
    if (result.timedOut) timedOut++;
    const graded: Record<string, unknown> = { ...record, correct: result.correct, method: result.method };
    if (result.error !== undefined) graded.grade_error = result.error;
    if (result.explain !== undefined) graded.explain = result.explain;
    return JSON.stringify(graded);
  });
  const body = out.length > 0 ? out.join("\n") + "\n" : "";

  if (outputPath === undefined) {
    await new Promise<void>((resolve, reject) => process.stdout.write(body, (e) => (e ? reject(e) : resolve())));
  } else {
    const temp = path.join(path.dirname(outputPath), `.${path.basename(outputPath)}.${process.pid}.${Date.now()}.tmp`);
    try {
      await fs.writeFile(temp, body, "utf8");
      await fs.rename(temp, outputPath);
    } catch (e) {
      await fs.rm(temp, { force: true });
      throw new Error(`cannot write grade output ${outputPath}: ${(e as Error).message}`);
    }
  }
  return { total: records.length, correct, timedOut };
}

/** Entry point for `octo-native grade --input cases.jsonl [--output out.jsonl] [--timeout-ms N] [--explain]`. */
export async function runGradeCommand(options: GradeCommandOptions): Promise<GradeSummary> {
  const { input, output, ...verify } = options;
  return gradeJsonl(input, output, verify);
}
