/**
 * Every method against plain GRPO on the embedded demo, with the same budget: the same SFT
 * starting model, training prompts, steps, prompts per step and samples per prompt, then the
 * same evaluation (the demo's: sampled at the rollout temperature, 4 samples per problem, on
 * 128 held-out problems). Two-stage methods spend half the steps in each stage. Trust-GRPO's
 * judge is startStepCheckerJudge (an arithmetic step checker behind the HTTP judge back end).
 *
 *   node -e 'require("./dist/lib/demo/compare-methods").main()' runs/demo/sft runs/compare 12
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
import { runTraining } from "../rl/run";
import { makeDirectory } from "../util/files";
import { shippedRecipe } from "../util/package-root";
import { mean } from "../util/stats";
import { demoMethodConfig, type MethodRecipe } from "./method-demos";
import { demoEvalProblems, demoEvalSettings, demoTrainProblems, formatTable } from "./run-demo";

export interface MethodComparison {
  steps: number;
  evalProblems: number;
  evaluations: Record<string, SelfCorrectionMetrics>;
  /** mean over steps of methodMetrics' numeric fields, per method */
  training: Record<string, Record<string, number>>;
  seconds: Record<string, number>;
}

type Stage = (modelPath: string, runDir: string, steps: number) => RunConfig;

const recipeStage = (recipe: MethodRecipe): Stage => (modelPath, runDir, steps) => demoMethodConfig(recipe, { modelPath, runDir, steps });
const octopusStage = (stage: 1 | 2): Stage => (modelPath, runDir, steps) =>
  loadConfig(shippedRecipe("demo.yaml"), [`model.path=${modelPath}`, `run.dir=${runDir}`, `run.steps=${steps}`, `method.octopus.stage=${stage}`, "rollout.promptsPerStep=8"]);

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

/** Each method as its stages; every method gets `steps` in total. */
export const COMPARED_METHODS: Record<string, Stage[]> = {
  grpo: [recipeStage("grpo")],
  octopus: [octopusStage(1), octopusStage(2)],
  score: [recipeStage("score-stage1"), recipeStage("score-stage2")],
  "trust-grpo": [
    (modelPath, runDir, steps) =>
      demoMethodConfig("trust-grpo", { modelPath, runDir, steps, extra: { method: { trustGrpo: { judge: { backend: "http", url: judgeUrl, promptTemplate: "{response}" } } } } }),
  ],
  srt: [recipeStage("srt")],
  "octopus-srt": [recipeStage("octopus-srt")],
};

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

export async function compareMethodsOnDemo(options: { sftDir: string; outDir: string; steps: number; methods?: string[]; log?: (line: string) => void }): Promise<MethodComparison> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + "\n"));
  const tokenizer = TextTokenizer.fromDir(options.sftDir);
  // The demo's evaluation (same problems, sampling and seeds), on its full 1000-problem set:
  // 128 problems left differences of ±2 points in the noise.
  const evalSet = demoEvalProblems(1000);
  const train = demoTrainProblems();
  const settings = demoEvalSettings(loadConfig(shippedRecipe("demo.yaml")));
  const evaluate = async (dir: string) => {
    const model = await Model.load(dir, { device: "cpu" });
    try {
      return (await evaluateModel(model, tokenizer, evalSet, settings)).metrics;
    } finally {
      model.dispose();
    }
  };
  const judge = await startStepCheckerJudge();
  judgeUrl = judge.url;
  const result: MethodComparison = { steps: options.steps, evalProblems: evalSet.length, evaluations: { sft: await evaluate(options.sftDir) }, training: {}, seconds: {} };
  for (const name of options.methods ?? Object.keys(COMPARED_METHODS)) {
    const stages = COMPARED_METHODS[name];
    if (!stages) throw new Error(`unknown method '${name}' (${Object.keys(COMPARED_METHODS).join(", ")})`);
    const started = Date.now();
    let model = options.sftDir;
    const runDirs: string[] = [];
    for (const [i, stage] of stages.entries()) {
      const runDir = path.join(options.outDir, stages.length > 1 ? `${name}-stage${i + 1}` : name);
      const steps = Math.floor(options.steps / stages.length) + (i === 0 ? options.steps % stages.length : 0);
      log(`compare: ${name}${stages.length > 1 ? ` stage ${i + 1}` : ""}, ${steps} steps`);
      model = (await runTraining(stage(model, runDir, steps), { examples: train, quiet: true })).finalCheckpoint;
      runDirs.push(runDir);
    }
    result.seconds[name] = (Date.now() - started) / 1000;
    result.evaluations[name] = await evaluate(model);
    result.training[name] = meanMethodMetrics(runDirs);
    log(formatTable({ sft: result.evaluations.sft, [name]: result.evaluations[name] }));
  }
  await judge.close();
  makeDirectory(options.outDir, "the comparison's output directory");
  fs.writeFileSync(path.join(options.outDir, "comparison.json"), JSON.stringify(result, null, 2) + "\n");
  return result;
}

/** `node -e 'require(".../compare-methods").main()' SFT_DIR OUT_DIR STEPS [METHOD…]` */
export async function main(argv = process.argv.slice(1)): Promise<void> {
  const [sftDir, outDir, steps, ...methods] = argv;
  if (!sftDir || !outDir) throw new Error("usage: SFT_DIR OUT_DIR [STEPS] [METHOD…]");
  const result = await compareMethodsOnDemo({ sftDir, outDir, steps: Number(steps ?? 12), methods: methods.length > 0 ? methods : undefined });
  console.log(formatTable(result.evaluations));
}
