/**
 * `octo-native compare` (docs/methods.md §10): methods against GRPO on the embedded demo, from the
 * same SFT model, at an equal generation budget. Every arm gets the same training prompts, steps,
 * prompts per step and response length; what differs is what it generates and trains on per prompt:
 *  - octopus: generates n (each response o1 ⊕ marker ⊕ o2) and trains on 2n (the n originals
 *    and n re-paired (o1, o2)), Stage I then Stage II, half the steps each;
 *  - grpo-n: generates and trains on n — Octopus' cost in generation;
 *  - grpo-2n: generates and trains on 2n — Octopus' count of trained sequences;
 *  - score, trust-grpo, srt, octopus-srt: their recipes at n.
 * n is the demo recipe's samples per prompt. Each arm then gets the demo's evaluation (the same
 * problems and sampling). `seeds` repeats every arm with run.seed 0…K−1 (rollouts and pairing
 * differ) and reports each metric's mean and standard error over the seeds. Trust-GRPO's judge is
 * startStepCheckerJudge (an arithmetic step checker behind the HTTP judge back end).
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import { Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { evaluateModel } from "../eval/evaluate";
import type { SelfCorrectionMetrics } from "../eval/metrics";
import { loadConfig, type RunConfig } from "../rl/config";
import { renderSvg } from "../report/charts";
import { escapeHtml } from "../report/html";
import { runTraining } from "../rl/run";
import { writeFileAtomic } from "../util/atomic-file";
import { makeDirectory } from "../util/files";
import { shippedRecipe } from "../util/package-root";
import { mean } from "../util/stats";
import { demoMethodConfig, type MethodRecipe } from "./method-demos";
import { demoEvalProblems, demoEvalSettings, demoTrainProblems } from "./run-demo";

export interface ArmResult {
  /** per prompt per step */
  generated: number;
  trained: number;
  /** one evaluation per seed */
  runs: SelfCorrectionMetrics[];
  /** over the seeds: the mean, and its standard error (sd / √K; null for one seed) */
  mean: Record<MetricKey, number>;
  se: Record<MetricKey, number | null>;
  /** mean over seeds and steps of the training metrics (accuracyO1, accuracyFinal, kl, methodMetrics' numbers) */
  training: Record<string, number>;
  seconds: number;
}

export interface MethodComparison {
  sftDir: string;
  steps: number;
  seeds: number;
  samplesPerPrompt: number;
  evalProblems: number;
  sft: SelfCorrectionMetrics;
  arms: Record<string, ArmResult>;
}

const METRIC_KEYS = ["accT1", "accT2", "delta", "deltaIncorrectToCorrect", "deltaCorrectToIncorrect", "markerRate"] as const;
type MetricKey = (typeof METRIC_KEYS)[number];

/** One stage of an arm: its config from `modelPath` for `steps`, seeded. */
type Stage = (modelPath: string, runDir: string, steps: number, seed: number) => RunConfig;

const recipeStage = (recipe: MethodRecipe, extra: Record<string, unknown> = {}): Stage => (modelPath, runDir, steps, seed) =>
  demoMethodConfig(recipe, { modelPath, runDir, steps, extra: { ...extra, run: { seed } } });
const octopusStage = (stage: 1 | 2): Stage => (modelPath, runDir, steps, seed) =>
  loadConfig(shippedRecipe("demo.yaml"), [`model.path=${modelPath}`, `run.dir=${runDir}`, `run.steps=${steps}`, `run.seed=${seed}`, `method.octopus.stage=${stage}`, "rollout.promptsPerStep=8"]);

/**
 * The demo's thinking judge for Trust-GRPO: an OpenAI-compatible endpoint on loopback whose
 * "judge" checks the arithmetic of every `a±b=c` step of the response and answers
 * `Score: <fraction of correct steps>` — a real reasoning score for the demo task, served
 * through the same HTTP back end a hosted judge model uses.
 */
export async function startStepCheckerJudge(): Promise<{ url: string; calls: () => number; close: () => Promise<void> }> {
  let calls = 0;
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      calls++;
      const text = String(JSON.parse(body).messages?.[0]?.content ?? "");
      const steps = [...text.matchAll(/(-?\d+)([+-])(\d+)=(-?\d+)/g)];
      const correct = steps.filter(([, a, op, b, c]) => (op === "+" ? Number(a) + Number(b) : Number(a) - Number(b)) === Number(c)).length;
      const content = steps.length === 0 ? "no steps to check" : `Score: ${correct / steps.length}`;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ choices: [{ message: { role: "assistant", content } }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return { url, calls: () => calls, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

let judgeUrl = "";

interface Arm {
  stages: Stage[];
  /** sequences generated and trained per prompt, in units of n */
  generated: 1 | 2;
  trained: 1 | 2;
}

/** The arms `compare` can run; each gets `steps` in total. */
export const COMPARED_ARMS: Record<string, Arm> = {
  octopus: { stages: [octopusStage(1), octopusStage(2)], generated: 1, trained: 2 },
  "grpo-n": { stages: [recipeStage("grpo")], generated: 1, trained: 1 },
  "grpo-2n": { stages: [(...args) => recipeStage("grpo", { rollout: { samplesPerPrompt: 2 * demoSamplesPerPrompt() } })(...args)], generated: 2, trained: 2 },
  score: { stages: [recipeStage("score-stage1"), recipeStage("score-stage2")], generated: 2, trained: 1 },
  "trust-grpo": {
    // The judge's URL is known once startStepCheckerJudge has started: read when the stage is made.
    stages: [(...args) => recipeStage("trust-grpo", { method: { trustGrpo: { judge: { backend: "http", url: judgeUrl, promptTemplate: "{response}" } } } })(...args)],
    generated: 1,
    trained: 1,
  },
  srt: { stages: [recipeStage("srt")], generated: 1, trained: 1 },
  "octopus-srt": { stages: [recipeStage("octopus-srt")], generated: 1, trained: 2 },
};

/** What `compare` runs without --methods: Octopus and its two GRPO baselines. */
export const DEFAULT_ARMS = ["octopus", "grpo-n", "grpo-2n"];

/** n: the demo recipe's samples per prompt (every recipe at demo scale has it). */
function demoSamplesPerPrompt(): number {
  return loadConfig(shippedRecipe("demo.yaml")).rollout.samplesPerPrompt;
}

function meanMethodMetrics(runDirs: string[]): Record<string, number> {
  const sums: Record<string, number[]> = {};
  for (const dir of runDirs)
    for (const line of fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n")) {
      const m = JSON.parse(line);
      const fields = { accuracyO1: m.accuracyO1, accuracyFinal: m.accuracyFinal, kl: m.kl, ...(m.methodMetrics ?? {}) };
      for (const [k, v] of Object.entries(fields)) if (typeof v === "number") (sums[k] ??= []).push(v);
    }
  return Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, mean(v)]));
}

/** Mean and standard error of the mean over runs (sd with n − 1; null for a single run). */
function meanAndError(runs: SelfCorrectionMetrics[]): { mean: Record<MetricKey, number>; se: Record<MetricKey, number | null> } {
  const m = {} as Record<MetricKey, number>, se = {} as Record<MetricKey, number | null>;
  for (const key of METRIC_KEYS) {
    const xs = runs.map((r) => r[key]);
    m[key] = mean(xs);
    se[key] = xs.length < 2 ? null : Math.sqrt(xs.reduce((a, x) => a + (x - m[key]) ** 2, 0) / (xs.length - 1) / xs.length);
  }
  return { mean: m, se };
}

export interface CompareOptions {
  sftDir: string;
  outDir: string;
  steps: number;
  /** run.seed 0 … seeds − 1 (default 1) */
  seeds?: number;
  /** arm names (default DEFAULT_ARMS) */
  methods?: string[];
  /** held-out problems evaluated (default 1000, the demo's; 4 samples each) */
  evalProblems?: number;
  /** every arm's prompts per step and response length instead of the demo's (a smaller, quicker comparison) */
  scale?: { promptsPerStep?: number; maxNewTokens?: number };
  log?: (line: string) => void;
}

export async function compareMethodsOnDemo(options: CompareOptions): Promise<MethodComparison> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const seeds = options.seeds ?? 1;
  if (!Number.isInteger(seeds) || seeds < 1) throw new RangeError(`--seeds must be a positive integer (got ${seeds})`);
  if (!Number.isInteger(options.steps) || options.steps < 1) throw new RangeError(`--steps must be a positive integer (got ${options.steps})`);
  const names = options.methods ?? DEFAULT_ARMS;
  for (const [key, value] of Object.entries(options.scale ?? {}))
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${key} must be a positive integer (got ${value})`);
  const unknown = names.filter((n) => !COMPARED_ARMS[n]);
  if (unknown.length > 0) throw new Error(`unknown method(s) ${unknown.join(", ")}: choose from ${Object.keys(COMPARED_ARMS).join(", ")}`);
  if (!fs.existsSync(path.join(options.sftDir, "config.json")))
    throw new Error(`${options.sftDir} holds no model: run \`npx octo-native train\` first (its SFT model is runs/demo/sft), or pass --model`);
  makeDirectory(options.outDir, "the comparison's output directory");
  const tokenizer = TextTokenizer.fromDir(options.sftDir);
  // The demo's evaluation (same problems, sampling and seeds), by default on its full 1000-problem
  // set: 128 problems left differences of ±2 points in the noise.
  const evalSet = demoEvalProblems(options.evalProblems ?? 1000);
  const train = demoTrainProblems();
  const settings = demoEvalSettings(loadConfig(shippedRecipe("demo.yaml")));
  const n = demoSamplesPerPrompt();
  const evaluate = async (dir: string) => {
    const model = await Model.load(dir, { device: "cpu" });
    try {
      return (await evaluateModel(model, tokenizer, evalSet, settings)).metrics;
    } finally {
      model.dispose();
    }
  };
  const judge = names.includes("trust-grpo") ? await startStepCheckerJudge() : undefined;
  judgeUrl = judge?.url ?? "";
  const result: MethodComparison = {
    sftDir: path.resolve(options.sftDir), steps: options.steps, seeds, samplesPerPrompt: n, evalProblems: evalSet.length, sft: await evaluate(options.sftDir), arms: {},
  };
  try {
    for (const name of names) {
      const arm = COMPARED_ARMS[name];
      const started = Date.now();
      const runs: SelfCorrectionMetrics[] = [];
      const runDirs: string[] = [];
      for (let seed = 0; seed < seeds; seed++) {
        let model = options.sftDir;
        for (const [i, stage] of arm.stages.entries()) {
          const runDir = path.join(options.outDir, `${name}${arm.stages.length > 1 ? `-stage${i + 1}` : ""}-seed${seed}`);
          const steps = Math.floor(options.steps / arm.stages.length) + (i === 0 ? options.steps % arm.stages.length : 0);
          log(`compare: ${name}${arm.stages.length > 1 ? ` stage ${i + 1}` : ""}, seed ${seed}, ${steps} steps`);
          const config = stage(model, runDir, steps, seed);
          Object.assign(config.rollout, options.scale);
          model = (await runTraining(config, { examples: train, quiet: true })).finalCheckpoint;
          runDirs.push(runDir);
        }
        runs.push(await evaluate(model));
      }
      result.arms[name] = {
        generated: arm.generated * n, trained: arm.trained * n, runs, ...meanAndError(runs),
        training: meanMethodMetrics(runDirs), seconds: (Date.now() - started) / 1000,
      };
      log(formatComparison(result));
    }
  } finally {
    await judge?.close();
  }
  writeFileAtomic(path.join(options.outDir, "compare.json"), JSON.stringify(result, null, 2) + "\n");
  writeFileAtomic(path.join(options.outDir, "compare.html"), await comparisonHtml(result));
  return result;
}

const COLUMNS: { key: MetricKey; header: string }[] = [
  { key: "accT1", header: "Acc@t1" },
  { key: "accT2", header: "Acc@t2" },
  { key: "delta", header: "Δ" },
  { key: "deltaIncorrectToCorrect", header: "Δi→c" },
  { key: "deltaCorrectToIncorrect", header: "Δc→i" },
];

const percent = (x: number) => (100 * x).toFixed(1);
const withError = (m: number, se: number | null) => (se === null ? percent(m) : `${percent(m)} ± ${percent(se)}`);

/** The comparison as a text table: mean ± SE (points) over the seeds, with the SFT model on top. */
export function formatComparison(result: MethodComparison): string {
  const rows: string[][] = [["", "gen/train", ...COLUMNS.map((c) => c.header)]];
  rows.push(["sft", "", ...COLUMNS.map((c) => percent(result.sft[c.key]))]);
  for (const [name, arm] of Object.entries(result.arms)) rows.push([name, `${arm.generated}/${arm.trained}`, ...COLUMNS.map((c) => withError(arm.mean[c.key], arm.se[c.key]))]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ")).join("\n");
}

/** compare.html: the table, and Acc@t2 per arm with its standard error as a bar plot. */
async function comparisonHtml(result: MethodComparison): Promise<string> {
  const bars = Object.entries(result.arms).map(([arm, r]) => ({ arm, accT2: 100 * r.mean.accT2, low: 100 * (r.mean.accT2 - (r.se.accT2 ?? 0)), high: 100 * (r.mean.accT2 + (r.se.accT2 ?? 0)) }));
  const svg = await renderSvg({
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: { text: `Acc@t2 after ${result.steps} steps (mean ± SE over ${result.seeds} seed${result.seeds > 1 ? "s" : ""}); SFT ${percent(result.sft.accT2)}`, anchor: "start" },
    width: 360,
    height: 200,
    background: "white",
    data: { values: bars },
    layer: [
      { mark: { type: "bar", color: "#2563eb" }, encoding: { x: { field: "arm", type: "nominal", sort: null, title: null }, y: { field: "accT2", type: "quantitative", title: "Acc@t2 (%)" } } },
      { mark: { type: "rule", color: "#111827" }, encoding: { x: { field: "arm", type: "nominal", sort: null }, y: { field: "low", type: "quantitative" }, y2: { field: "high" } } },
    ],
  });
  const rows = formatComparison(result).split("\n").map((line, i) => `<tr>${line.split(/ {2,}/).map((c) => (i === 0 ? `<th>${escapeHtml(c)}</th>` : `<td>${escapeHtml(c)}</td>`)).join("")}</tr>`);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>octo-native compare</title>
<style>body{font-family:Helvetica,Arial,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}</style></head>
<body><h1>Methods at an equal generation budget</h1>
<p>From ${escapeHtml(result.sftDir)}: ${result.steps} RL steps per arm, ${result.seeds} seed(s), evaluated on ${result.evalProblems} held-out problems. gen/train: sequences generated / trained per prompt per step (n = ${result.samplesPerPrompt}). Points, mean ± standard error over the seeds.</p>
<table>${rows.join("\n")}</table>
${svg}
</body></html>
`;
}
