/**
 * Benchmark presets of `octo-native eval --data` (SPEC §8): GSM8K and MATH-500 ship in data/
 * (MIT); AIME24 and AMC23 are looked up in $OCTO_NATIVE_DATA, then ../shared/data beside the
 * package (see data/README.md for why).
 */
import fs from "node:fs";
import path from "node:path";

import { DatasetError, type DatasetSpec } from "../data";
import { packageRoot } from "../package-root";

/** Preset name → its file, relative to a data directory. */
export const EVAL_PRESETS: Record<string, string> = {
  gsm8k: "gsm8k/test.jsonl",
  math500: "math500/test.jsonl",
  aime24: "aime24/test.jsonl",
  amc23: "amc23/test.jsonl",
};

/** Data directories searched for a preset's file, in order. */
export function presetDirectories(): string[] {
  const fromEnv = process.env.OCTO_NATIVE_DATA ? [path.resolve(process.env.OCTO_NATIVE_DATA)] : [];
  return [...fromEnv, path.join(packageRoot, "data"), path.resolve(packageRoot, "..", "shared", "data")];
}

/** `--data FILE|PRESET` → the dataset to load; a name that is neither is an error listing both kinds. */
export function resolveEvalData(data: string, limit?: number): DatasetSpec & { preset?: string } {
  if (fs.existsSync(data)) return { path: data, limit };
  const relative = EVAL_PRESETS[data.toLowerCase()];
  if (relative === undefined)
    throw new DatasetError(`--data '${data}' is neither a file nor a preset (presets: ${Object.keys(EVAL_PRESETS).join(", ")})`);
  const searched = presetDirectories().map((dir) => path.join(dir, relative));
  const found = searched.find((file) => fs.existsSync(file));
  if (!found)
    throw new DatasetError(
      `preset '${data}' needs ${relative}, which is in none of: ${searched.join(", ")}. ` +
        `Put the file there, set OCTO_NATIVE_DATA to a directory holding it, or pass --data with the file's path`,
    );
  return { path: found, limit, preset: data.toLowerCase() };
}
