/**
 * Benchmark presets of `octo-native eval --data` (docs/methods.md §8): GSM8K and MATH-500 ship in data/
 * (MIT); AIME24 and AMC23 carry no licence that lets us ship them, so they are found only in
 * $OCTO_NATIVE_DATA (see data/README.md), or given as a file with --data.
 */
import fs from "node:fs";
import path from "node:path";

import { DatasetError, type DatasetSpec } from "../rl/data";
import { packageRoot } from "../util/package-root";

/** Preset name → its file, relative to a data directory. */
export const EVAL_PRESETS: Record<string, string> = {
  gsm8k: "gsm8k/test.jsonl",
  math500: "math500/test.jsonl",
  aime24: "aime24/test.jsonl",
  amc23: "amc23/test.jsonl",
};

/** Presets whose files the package does not ship: the user brings them (data/README.md). */
const USER_SUPPLIED = new Set(["aime24", "amc23"]);

/** Data directories searched for a preset's file, in order: $OCTO_NATIVE_DATA, then the package's data/. */
export function presetDirectories(): string[] {
  const fromEnv = process.env.OCTO_NATIVE_DATA ? [path.resolve(process.env.OCTO_NATIVE_DATA)] : [];
  return [...fromEnv, path.join(packageRoot, "data")];
}

/** `--data FILE|PRESET` → the dataset to load; a name that is neither is an error listing both kinds. */
export function resolveEvalData(data: string, limit?: number): DatasetSpec & { preset?: string } {
  if (fs.existsSync(data)) return { path: data, limit };
  const relative = EVAL_PRESETS[data.toLowerCase()];
  if (relative === undefined)
    throw new DatasetError(`--data '${data}' is neither a file nor a preset (presets: ${Object.keys(EVAL_PRESETS).join(", ")})`);
  const searched = presetDirectories().map((dir) => path.join(dir, relative));
  const found = searched.find((file) => fs.existsSync(file));
  if (!found) {
    const name = data.toLowerCase();
    const why = USER_SUPPLIED.has(name) ? `${name} is not shipped with octo-native (no licence to redistribute it)` : `the package's copy is missing`;
    throw new DatasetError(
      `preset '${data}': ${why}. Put its file at DIR/${relative} (rows {problem, answer}) and set OCTO_NATIVE_DATA=DIR, ` +
        `or pass --data with the file's path. Searched: ${searched.join(", ")}`,
    );
  }
  return { path: found, limit, preset: data.toLowerCase() };
}
