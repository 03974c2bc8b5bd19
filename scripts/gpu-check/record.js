// The GPU check's report (scripts/gpu-check.sh): one JSON file, rewritten atomically after every
// step, so a run cut short still leaves every step done so far.
//
//   record.js init   --report FILE --mode MODE --budget SECONDS --node-modules WHERE --dist-sources SAME
//   record.js step   --report FILE --name STEP --rc CODE --seconds S --limit S --result FILE --log FILE
//   record.js skip   --report FILE --name STEP --reason TEXT
//   record.js finish --report FILE --seconds S
//   record.js field  --report FILE --path steps.environment.torch.sitePackages   (prints it; "" if absent)
//
// A step's status is what its helper wrote into its result file (ok, failed, skipped,
// not-implemented), except: a timeout (timeout's exit 124, or 137 after its KILL) or a non-zero exit
// is failed whatever the file says, and no file at all is failed. Failed steps carry their log's tail.
// step and skip print the step's outcome as one line.
"use strict";
const fs = require("node:fs");
const { parseArgs } = require("node:util");

const { writeJsonAtomically } = require("./step");

const TIMEOUT_CODES = new Set([124, 137]);
const LOG_TAIL_LINES = 40;

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

function logTail(file) {
  if (!file || !fs.existsSync(file)) return undefined;
  return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-LOG_TAIL_LINES).join("\n");
}

function stepRecord({ rc, result: resultFile, log, seconds, limit }) {
  const code = Number(rc);
  let result;
  try {
    result = resultFile && fs.existsSync(resultFile) ? readJson(resultFile) : undefined;
  } catch (error) {
    result = { status: "failed", error: `unreadable result ${resultFile}: ${error.message}` };
  }
  const timing = { seconds: Number(seconds), limitSeconds: Number(limit) };
  if (TIMEOUT_CODES.has(code))
    return { ...result, status: "failed", error: `timed out after ${limit} s (exit ${code})`, timedOut: true, ...timing, logTail: logTail(log) };
  if (!result) return { status: "failed", error: `exited ${code} without writing a result`, ...timing, logTail: logTail(log) };
  if (code !== 0 && result.status !== "failed")
    return { ...result, status: "failed", error: result.error ?? `exited ${code}`, ...timing, logTail: logTail(log) };
  return { ...result, ...timing, ...(result.status === "failed" ? { exitCode: code, logTail: logTail(log) } : {}) };
}

/** The device and the versions, lifted from the environment step to the top of the report. */
function headline(environment) {
  const gpu = environment.gpu?.devices?.[0];
  const torch = environment.torch ?? {};
  return {
    device: gpu?.name ?? torch.deviceName ?? "no GPU visible",
    versions: {
      driver: gpu?.driver ?? null,
      nvcc: environment.nvcc ?? null,
      torch: torch.version ?? null,
      cuda: torch.cuda ?? null,
      cudnn: torch.cudnn ?? null,
      nccl: torch.nccl ?? null,
      transformers: environment.transformers?.version ?? null,
      python: environment.python?.executable ?? null,
      node: process.version,
    },
  };
}

function summarize(steps) {
  const counts = { ok: 0, failed: 0, skipped: 0, "not-implemented": 0 };
  for (const step of Object.values(steps)) counts[step.status] = (counts[step.status] ?? 0) + 1;
  return counts;
}

function main() {
  const [command, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: Object.fromEntries(["report", "mode", "budget", "node-modules", "dist-sources", "name", "rc", "seconds", "limit", "result", "log", "reason", "path"].map((k) => [k, { type: "string" }])),
    strict: true,
  });
  if (!values.report) throw new Error("--report FILE is required");
  if (command === "init") {
    writeJsonAtomically(values.report, {
      check: "octo-native GPU acceptance (scripts/gpu-check.sh)",
      mode: values.mode,
      started: new Date().toISOString(),
      budgetSeconds: Number(values.budget),
      // what runs the steps: this Node, these node_modules, and whether dist/ is compiled from these sources
      runtime: { node: `${process.version} (${process.execPath})`, nodeModules: values["node-modules"], distMatchesSources: values["dist-sources"] },
      finished: false,
      device: null,
      versions: null,
      summary: summarize({}),
      steps: {},
    });
    return;
  }
  if (command === "field") {
    const value = values.path.split(".").reduce((v, key) => (v == null ? undefined : v[key]), readJson(values.report));
    process.stdout.write(value == null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value));
    return;
  }
  const report = readJson(values.report);
  if (command === "step" || command === "skip") {
    const record = command === "skip" ? { status: "skipped", reason: values.reason } : stepRecord(values);
    report.steps[values.name] = record;
    if (values.name === "environment" && record.status === "ok") Object.assign(report, headline(record));
    const why = record.reason ?? (record.status === "failed" ? record.error?.split("\n")[0] : undefined);
    console.log(`=== ${values.name}: ${record.status}${record.seconds !== undefined ? ` in ${record.seconds} s` : ""}${why ? ` (${why})` : ""}`);
  } else if (command === "finish") {
    report.finished = true;
    report.totalSeconds = Number(values.seconds);
  } else {
    throw new Error(`unknown command '${command}' (init, step, skip, finish, field)`);
  }
  report.summary = summarize(report.steps);
  report.updated = new Date().toISOString();
  writeJsonAtomically(values.report, report);
}

main();
