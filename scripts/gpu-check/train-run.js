// A 3-step RL run through the CLI on the device (scripts/gpu-check.sh, step train-run):
//   octo-native train --config configs/demo.yaml --set model.device=cuda run.steps=3 ...
// The demo recipe (Octopus Stage I) on the built-in model (model.path=demo: random weights and the
// character tokenizer, made on the spot) and the shipped GSM8K training set, so nothing is fetched.
// Small rollouts keep it to seconds. ok = the command exited 0 and metrics.jsonl has one line per step.
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { repoRoot, runStep } = require("./step");

const STEPS = 3;

runStep(
  { device: { type: "string", default: "cuda" }, work: { type: "string" }, small: { type: "boolean", default: false } },
  async ({ device, work, small }) => {
    if (!work) throw new Error("--work DIR is required (the run directory and the demo model go there)");
    const runDir = path.join(work, "train-run");
    const settings = [
      `model.device=${device}`,
      `run.steps=${STEPS}`,
      "model.path=demo",
      `data.train.path=${path.join(repoRoot, "data", "gsm8k", "train.jsonl")}`,
      "data.train.limit=64",
      "rollout.promptsPerStep=4",
      "rollout.samplesPerPrompt=4",
      `rollout.maxNewTokens=${small ? 24 : 64}`,
    ];
    const args = [path.join(repoRoot, "dist", "lib", "commands", "cli.js"), "train", "--config", path.join(repoRoot, "configs", "demo.yaml"), "--dir", runDir, "--set", ...settings];
    const started = process.hrtime.bigint();
    // The demo model is made under XDG_CACHE_HOME: here, in the scratch space, not the user's cache.
    const child = spawnSync(process.execPath, args, { cwd: repoRoot, env: { ...process.env, XDG_CACHE_HOME: path.join(work, "cache") }, encoding: "utf8" });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stderr.write(child.stderr ?? "");
    const metricsFile = path.join(runDir, "metrics.jsonl");
    const metrics = fs.existsSync(metricsFile) ? fs.readFileSync(metricsFile, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
    let summary = null;
    try {
      summary = JSON.parse(child.stdout.trim().split("\n").pop());
    } catch {
      summary = child.stdout.trim().slice(-2000) || null;
    }
    const ok = child.status === 0 && metrics.length === STEPS;
    return {
      status: ok ? "ok" : "failed",
      ...(ok ? {} : { error: `train exited ${child.status ?? child.signal} with ${metrics.length} metrics lines (expected ${STEPS})`, stderrTail: (child.stderr ?? "").slice(-3000) }),
      command: `octo-native train --config configs/demo.yaml --set ${settings.join(" ")}`,
      seconds,
      steps: metrics.length,
      lastMetrics: metrics[metrics.length - 1] ?? null,
      summary,
      reportWritten: fs.existsSync(path.join(runDir, "report.html")),
    };
  },
);
