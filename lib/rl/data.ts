/**
 * Datasets of verifiable problems (docs/methods.md §8, §9): JSONL or Parquet files, read through
 * adapters for the layouts people bring (GSM8K, MATH-500, verl-style parquet), shuffled with
 * a seed and walked by a cursor whose state goes into checkpoints.
 */
import fs from "node:fs";
import path from "node:path";

import { parquetReadObjects } from "hyparquet";

import { gsm8kGold } from "../grading/extract";
import { readRegularFile } from "../util/files";
import { packageRoot } from "../util/package-root";
import { seededPermutation } from "../util/random";

export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

/** One problem with a verifiable answer. */
export interface Example {
  id: string;
  /** the problem text, or chat messages for datasets that carry them (verl) */
  problem: string;
  messages?: { role: string; content: string }[];
  /** the gold final answer (GSM8K: the number after ####) */
  answer: string;
}

export type Adapter = "gsm8k" | "math" | "verl" | "auto";

type Row = Record<string, unknown>;

/**
 * A dataset path as written in a config or on the command line. A relative path is taken from the
 * working directory; one that is not there but is in the package (the shipped recipes name
 * `data/gsm8k/train.jsonl`) is taken from the package, so recipes also run from outside a clone.
 */
export function resolveDatasetPath(file: string): string {
  if (fs.existsSync(file)) return file;
  if (path.isAbsolute(file)) throw new DatasetError(`dataset file '${file}' does not exist`);
  const shipped = path.join(packageRoot, file);
  if (fs.existsSync(shipped)) return shipped;
  throw new DatasetError(`dataset file '${file}' does not exist (looked in ${process.cwd()} and in the package at ${packageRoot})`);
}

const isRow = (value: unknown): value is Row => value !== null && typeof value === "object" && !Array.isArray(value);

/** A parsed value that is not a row, as a message names it: "null", "an array", "a string", … */
function describeNonRow(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

const ROW_EXAMPLE = `{"problem": "...", "answer": "..."}`;

/** Reads every row of a .jsonl / .json / .parquet file; every row is an object. */
export async function readRows(file: string): Promise<Row[]> {
  file = resolveDatasetPath(file);
  const ext = path.extname(file).toLowerCase();
  if (ext !== ".parquet" && ext !== ".jsonl" && ext !== ".json")
    throw new DatasetError(`${file}: unknown dataset format '${ext}' (use .jsonl, .json or .parquet)`);
  let bytes: Buffer;
  try {
    bytes = readRegularFile(file);
  } catch (error) {
    throw new DatasetError(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  if (ext === ".parquet") {
    let rows: Row[];
    try {
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      rows = (await parquetReadObjects({ file: buffer })) as Row[];
    } catch (error) {
      throw new DatasetError(`${file}: not a readable parquet file (${(error as Error).message})`);
    }
    // hyparquet assigns each column to the row by name: a '__proto__' column replaces the row's prototype.
    if (rows.length > 0 && Object.getPrototypeOf(rows[0]) !== Object.prototype)
      throw new DatasetError(`${file}: has a column named '__proto__', which cannot be a field of a row; rename or drop it`);
    return rows;
  }
  const text = bytes.toString("utf8");
  if (ext === ".json") {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new DatasetError(`${file}: not valid JSON (${(error as Error).message}); a .json dataset is one array of objects (for one object per line, name it .jsonl)`);
    }
    if (!Array.isArray(parsed)) throw new DatasetError(`${file}: a .json dataset must hold an array of objects`);
    parsed.forEach((row, i) => {
      if (!isRow(row)) throw new DatasetError(`${file}: element ${i} of the array is ${describeNonRow(row)}; each must be an object like ${ROW_EXAMPLE}`);
    });
    return parsed;
  }
  const rows: Row[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (error) {
      throw new DatasetError(`${file}:${i + 1}: not valid JSON (${(error as Error).message})`);
    }
    if (!isRow(row)) throw new DatasetError(`${file}:${i + 1}: the line is ${describeNonRow(row)}; each line must be an object like ${ROW_EXAMPLE}`);
    rows.push(row);
  });
  return rows;
}

function detectAdapter(row: Row): Exclude<Adapter, "auto"> | undefined {
  if (Array.isArray(row.prompt) && row.reward_model && typeof row.reward_model === "object") return "verl";
  if (typeof row.question === "string" && typeof row.answer === "string" && row.answer.includes("####")) return "gsm8k";
  if (typeof row.problem === "string" && row.answer !== undefined) return "math";
  return undefined;
}

function toExample(row: Row, adapter: Exclude<Adapter, "auto">, index: number, where: string): Example {
  const need = (key: string, value: unknown): string => {
    if (typeof value === "string" && value.trim() !== "") return value;
    if (typeof value === "number") return String(value);
    throw new DatasetError(`${where}: row ${index + 1} has no usable '${key}' (adapter ${adapter})`);
  };
  const id = String(row.id ?? row.unique_id ?? row.sample_id ?? index);
  switch (adapter) {
    case "gsm8k": {
      let answer: string;
      try {
        answer = gsm8kGold(need("answer", row.answer));
      } catch (error) {
        throw new DatasetError(`${where}: row ${index + 1}: ${(error as Error).message}`);
      }
      // "1,200" -> "1200": the number after ####, without thousands separators.
      return { id, problem: need("question", row.question), answer: answer.replace(/,/g, "") };
    }
    case "math":
      return { id, problem: need("problem", row.problem), answer: need("answer", row.answer) };
    case "verl": {
      const messages = row.prompt as { role: string; content: string }[];
      const groundTruth = (row.reward_model as Row).ground_truth;
      const user = [...messages].reverse().find((m) => m.role === "user");
      return { id, problem: need("prompt[user].content", user?.content), messages, answer: need("reward_model.ground_truth", groundTruth) };
    }
  }
}

export interface DatasetSpec {
  path: string;
  adapter?: Adapter;
  /** keep the first `limit` examples (after reading, before shuffling) */
  limit?: number;
}

export async function loadDataset(spec: DatasetSpec): Promise<Example[]> {
  const rows = await readRows(spec.path);
  if (rows.length === 0) throw new DatasetError(`${spec.path}: the dataset is empty`);
  const adapter = spec.adapter && spec.adapter !== "auto" ? spec.adapter : detectAdapter(rows[0]);
  if (!adapter)
    throw new DatasetError(
      `${spec.path}: cannot tell the layout from the first row's keys (${Object.keys(rows[0]).join(", ")}); ` +
        `set the adapter: gsm8k (question/answer with ####), math (problem/answer) or verl (prompt messages + reward_model.ground_truth)`,
    );
  const limited = spec.limit !== undefined ? rows.slice(0, spec.limit) : rows;
  return limited.map((row, i) => toExample(row, adapter, i, spec.path));
}

/** Where a run is in its data: saved in checkpoints so a resumed run sees the same order. */
export interface DataCursorState {
  seed: number;
  epoch: number;
  position: number;
}

/** Walks a dataset in a seeded order, reshuffling (seed + epoch) at each epoch. */
export class DataCursor {
  private order: number[];

  constructor(private readonly size: number, private state: DataCursorState) {
    if (size === 0) throw new DatasetError("cannot iterate an empty dataset");
    this.order = seededPermutation(size, state.seed + state.epoch);
  }

  static start(size: number, seed: number): DataCursor {
    return new DataCursor(size, { seed, epoch: 0, position: 0 });
  }

  get snapshot(): DataCursorState {
    return { ...this.state };
  }

  /** The next `count` example indices. */
  next(count: number): number[] {
    const out: number[] = [];
    while (out.length < count) {
      if (this.state.position >= this.size) {
        this.state = { ...this.state, epoch: this.state.epoch + 1, position: 0 };
        this.order = seededPermutation(this.size, this.state.seed + this.state.epoch);
      }
      out.push(this.order[this.state.position]);
      this.state = { ...this.state, position: this.state.position + 1 };
    }
    return out;
  }
}
