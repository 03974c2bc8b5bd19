/**
 * Experiments on the embedded demo's recipe (docs/demo-diagnosis.md): one SFT cold start per seed
 * (cached under the work directory; SFT is deterministic for a seed on one machine), then RL
 * variants from it, each evaluated like the demo. Prints one JSON line per variant.
 *
 *   node dist/bench/demo-experiments.js plan.json
 *
 * plan.json: { work, seed, sftSteps, evalProblems, variants: [{ name, stage1Steps, stage2Steps,
 *              stage1?: ["key=value", …], stage2?: […], both?: […] }] }
 */
import fs from "node:fs";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { TextTokenizer } from "../lib/engine/tokenizer";
import { evaluateModel } from "../lib/eval/evaluate";
import type { EvalMetrics } from "../lib/eval/metrics";
import { coldStart, createBaseModel, demoEvalSettings, octopusStage, recipe, writeEvalSet } from "../lib/demo/run-demo";
import { loadConfig } from "../lib/rl/config";

interface Variant {
  name: string;
  stage1Steps: number;
  stage2Steps: number;
  stage1?: string[];
  stage2?: string[];
  both?: string[];
  evalStage1?: boolean;
}

interface Plan {
  work: string;
  seed: number;
  sftSteps: number;
  evalProblems: number;
  samplesPerProblem?: number;
  sftOverrides?: Record<string, number>;
  variants: Variant[];
}

const pick = (m: EvalMetrics) => ({
  accT1: +(100 * m.accT1).toFixed(2), accT2: +(100 * m.accT2).toFixed(2),
  i2c: +(100 * m.deltaIncorrectToCorrect).toFixed(2), c2i: +(100 * m.deltaCorrectToIncorrect).toFixed(2),
  marker: +(100 * m.markerRate).toFixed(1),
  seT2: +(100 * (m.standardError?.accT2 ?? NaN)).toFixed(2),
});

function stepSummary(runDir: string) {
  const lines = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const steps = lines.filter((l) => typeof l.step === "number" && typeof l.reward === "number");
  const r = (x: number) => +x.toFixed(3);
  return {
    reward: steps.map((l) => r(l.reward)),
    accO1: steps.map((l) => r(l.accuracyO1)),
    accFinal: steps.map((l) => r(l.accuracyFinal)),
    gradNorm: steps.map((l) => r(l.gradNorm)),
    clip: steps.map((l) => r(l.clipFraction)),
    kl: steps.map((l) => +l.kl.toExponential(2)),
    entropy: steps.map((l) => r(l.entropy)),
    seconds: r(steps.reduce((a, l) => a + l.seconds.total, 0)),
  };
}

async function main(): Promise<void> {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8")) as Plan;
  const work = path.resolve(plan.work);
  fs.mkdirSync(work, { recursive: true });
  const config = loadConfig(recipe);
  const log = (line: string) => process.stderr.write(line + "\n");
  const evalSet = await writeEvalSet(work, plan.evalProblems);
  const settings = { ...demoEvalSettings(config), ...(plan.samplesPerProblem ? { samplesPerProblem: plan.samplesPerProblem, ks: [1] } : {}) };
  const evaluate = async (model: Model, tokenizer: TextTokenizer) => (await evaluateModel(model, tokenizer, evalSet.examples, settings)).metrics;

  const sftTag = `sft-seed${plan.seed}-steps${plan.sftSteps}${plan.sftOverrides ? "-" + Object.entries(plan.sftOverrides).map(([k, v]) => `${k}${v}`).join("-") : ""}`;
  const sftDir = path.join(work, sftTag);
  const sftEvalFile = path.join(work, `${sftTag}-eval${plan.evalProblems}x${settings.samplesPerProblem}.json`);
  let sftSeconds = 0;
  if (!fs.existsSync(path.join(sftDir, "tokenizer.json"))) {
    const t = Date.now();
    const { base, tokenizer } = await createBaseModel(path.join(work, `base-seed${plan.seed}`), plan.seed);
    await coldStart(base, tokenizer, config, plan.sftSteps, sftDir, log, t, plan.seed, plan.sftOverrides);
    base.dispose();
    sftSeconds = (Date.now() - t) / 1000;
  }
  if (!fs.existsSync(sftEvalFile)) {
    const t = Date.now();
    const model = await Model.load(sftDir, { device: "cpu" });
    const m = await evaluate(model, TextTokenizer.fromDir(sftDir));
    model.dispose();
    fs.writeFileSync(sftEvalFile, JSON.stringify({ metrics: m, seconds: (Date.now() - t) / 1000 }));
  }
  const sftEval = JSON.parse(fs.readFileSync(sftEvalFile, "utf8"));
  console.log(JSON.stringify({ name: "sft", seed: plan.seed, sftSteps: plan.sftSteps, sftSeconds, evalSeconds: sftEval.seconds, ...pick(sftEval.metrics) }));

  for (const v of plan.variants) {
    const dir = path.join(work, `seed${plan.seed}-${v.name}`);
    fs.rmSync(dir, { recursive: true, force: true });
    const t = Date.now();
    const out: Record<string, unknown> = { name: v.name, seed: plan.seed };
    let from = sftDir;
    for (const stage of [1, 2] as const) {
      const steps = stage === 1 ? v.stage1Steps : v.stage2Steps;
      if (steps === 0) continue;
      const overrides = [`run.seed=${plan.seed}`, ...(v.both ?? []), ...((stage === 1 ? v.stage1 : v.stage2) ?? [])];
      // Stage I runs are deterministic for their settings: variants that differ only in Stage II share one.
      const cached = stage === 1 ? path.join(work, `${sftTag}-stage1-${steps}-${overrides.join(",").replace(/[^\w.=,-]/g, "_")}`) : undefined;
      if (cached && fs.existsSync(path.join(cached, "done.json"))) {
        from = JSON.parse(fs.readFileSync(path.join(cached, "done.json"), "utf8")).checkpoint;
        out.stage1 = { cached: path.basename(cached), ...stepSummary(path.join(cached, "stage1")) };
      } else {
        from = await octopusStage(cached ?? dir, stage, from, steps, true, log, overrides);
        if (cached) fs.writeFileSync(path.join(cached, "done.json"), JSON.stringify({ checkpoint: from }));
        out[`stage${stage}`] = stepSummary(path.join(cached ?? dir, `stage${stage}`));
      }
      if (stage === 1 && v.evalStage1 && v.stage2Steps > 0) {
        const model = await Model.load(from, { device: "cpu" });
        out.afterStage1 = pick(await evaluate(model, TextTokenizer.fromDir(from)));
        model.dispose();
      }
    }
    const rlSeconds = (Date.now() - t) / 1000;
    const model = await Model.load(from, { device: "cpu" });
    const m = await evaluate(model, TextTokenizer.fromDir(from));
    model.dispose();
    const after = pick(m);
    console.log(JSON.stringify({ ...out, rlSeconds, ...after, gainT2: +(after.accT2 - pick(sftEval.metrics).accT2).toFixed(2) }));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
