// The common frame of the GPU check's node helpers (scripts/gpu-check.sh runs each as one step):
// command-line options, the result file the driver records, and the dry run's --check.
//
// Every helper takes --result FILE (where its result object goes, written atomically) and
// --check (the dry run: its modules have loaded and its options parsed; it writes a "skipped"
// result and touches no device). A result is a plain object whose `status` is one of ok, failed,
// skipped, not-implemented; the rest are the step's numbers.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");

/** The repository root: scripts/gpu-check/ sits two levels below it. */
const repoRoot = path.resolve(__dirname, "..", "..");

/** Loads a module of the compiled TypeScript layer (dist/ must exist: `npx tsc -p tsconfig.json`). */
function dist(modulePath) {
  return require(path.join(repoRoot, "dist", modulePath));
}

function writeJsonAtomically(file, value) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n");
  fs.renameSync(tmp, file);
}

/**
 * Runs a helper: parses `options` (node:util parseArgs) plus --result and --check, then writes
 * what `measure(values)` returns. An exception becomes a failed result naming the error, so the
 * driver records why even when the helper dies early.
 */
async function runStep(options, measure) {
  const { values } = parseArgs({
    options: { ...options, result: { type: "string" }, check: { type: "boolean", default: false } },
    strict: true,
  });
  if (!values.result) throw new Error(`${path.basename(process.argv[1])}: --result FILE is required`);
  if (values.check) {
    writeJsonAtomically(values.result, { status: "skipped", reason: "dry run (no GPU): helper loaded, options parsed, nothing measured" });
    return;
  }
  let result;
  try {
    result = await measure(values);
  } catch (error) {
    result = { status: "failed", error: error instanceof Error ? error.stack ?? error.message : String(error) };
  }
  writeJsonAtomically(values.result, result);
  if (result.status === "failed") process.exitCode = 1;
}

/** Median of `values` (sorted copy). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Seconds taken by `fn` (awaited). */
async function seconds(fn) {
  const start = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, value };
}

module.exports = { repoRoot, dist, writeJsonAtomically, runStep, median, seconds };
