/**
 * A resumed run must go on with the run it resumes (docs/reliability.md): the same resolved config
 * and the same training set. A change is refused with the changed keys listed, unless the caller
 * allows it (`--allow-config-change`); then the old config is kept beside the new one.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

import YAML from "yaml";

import { fileError } from "../util/atomic-file";
import { readRegularFile } from "../util/files";
import { parseConfig, type RunConfig } from "./config";
import type { Example } from "./data";

/**
 * Keys that only say how long the run goes on, how often it saves or evaluates, and how it waits:
 * a resume may change them without the flag (extending a finished run is the common case).
 */
const SCHEDULE_KEYS = [/^run\.(steps|saveEvery|evalEvery|maxSkippedSteps)$/, /^distributed\.timeoutSeconds$/, /^data\.eval(\.|$)/];

/** The training set's identity: its size and a hash of its problems, answers and messages, in order. */
export interface TrainingSetFingerprint {
  examples: number;
  sha256: string;
}

export function trainingSetFingerprint(examples: Example[]): TrainingSetFingerprint {
  const hash = createHash("sha256");
  for (const e of examples) hash.update(JSON.stringify([e.id, e.problem, e.answer, e.messages ?? null]) + "\n");
  return { examples: examples.length, sha256: hash.digest("hex") };
}

/** Leaves of a config as dotted keys → JSON values (arrays and records compare whole). */
function leaves(value: unknown, prefix = "", out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length > 0)
    for (const [key, child] of Object.entries(value)) leaves(child, prefix ? `${prefix}.${key}` : key, out);
  else out.set(prefix, JSON.stringify(value));
  return out;
}

export interface ConfigChange {
  key: string;
  before?: string;
  after?: string;
}

/** What differs between two resolved configs, as dotted keys. */
export function configChanges(before: RunConfig, after: RunConfig): ConfigChange[] {
  const a = leaves(before), b = leaves(after);
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  return keys.filter((k) => a.get(k) !== b.get(k)).map((key) => ({ key, before: a.get(key), after: b.get(key) }));
}

export function isScheduleKey(key: string): boolean {
  return SCHEDULE_KEYS.some((pattern) => pattern.test(key));
}

/** The resolved config a run directory was last run with (undefined when it has none). */
export function readRunConfig(file: string): RunConfig | undefined {
  if (!fs.existsSync(file)) return undefined;
  let raw: unknown;
  try {
    raw = YAML.parse(readRegularFile(file, "utf8"));
  } catch (error) {
    throw fileError(error, file, "read the run's config");
  }
  return parseConfig(raw, file);
}

/**
 * Checks a resume against what the run was: its config.yaml and the checkpoint's training set.
 * Returns the lines to log (allowed changes); throws on a change that needs `allow` without it.
 */
export function checkResumeChanges(
  runDir: string,
  config: RunConfig,
  trained: TrainingSetFingerprint | undefined,
  now: TrainingSetFingerprint,
  allow: boolean,
): { notes: string[]; changed: boolean } {
  const previous = readRunConfig(path.join(runDir, "config.yaml"));
  const changes = previous ? configChanges(previous, config) : [];
  const refused = changes.filter((c) => !isScheduleKey(c.key)).map((c) => `${c.key}: ${c.before ?? "(unset)"} → ${c.after ?? "(unset)"}`);
  if (trained && trained.sha256 !== now.sha256)
    refused.push(`the training set: ${trained.examples} examples (sha256 ${trained.sha256.slice(0, 12)}…) at the checkpoint, ${now.examples} (sha256 ${now.sha256.slice(0, 12)}…) now`);
  const notes = changes.filter((c) => isScheduleKey(c.key)).map((c) => `resume: ${c.key} ${c.before ?? "(unset)"} → ${c.after ?? "(unset)"}`);
  if (refused.length > 0 && !allow)
    throw new Error(
      `--resume of ${runDir} with a changed run:\n  ${refused.join("\n  ")}\n` +
        `Resume with the config the run was started with, start a new run.dir, or pass --allow-config-change (library: allowConfigChange) to go on with the change ` +
        `(the old config is kept as config.until-step-N.yaml)`,
    );
  if (refused.length > 0) notes.push(...refused.map((r) => `resume with a changed run (allowed): ${r}`));
  return { notes, changed: changes.length > 0 || refused.length > 0 };
}
