// `octo-native compare`: the arms at an equal generation budget from the quick demo's SFT model,
// repeated over seeds, with each metric's mean and standard error; compare.json and compare.html.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { compareMethodsOnDemo, formatComparison, type MethodComparison } from "../lib/demo/compare-methods";
import { quickDemoRun } from "./helpers/quick-demo";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-compare-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let sftDir = "";
let result: MethodComparison;
const out = path.join(tmp, "compare");
beforeAll(async () => {
  sftDir = path.join((await quickDemoRun()).dir, "sft");
  // 2 prompts per step and 32 new tokens keep it quick; the arms' counts per prompt are what is checked.
  result = await compareMethodsOnDemo({ sftDir, outDir: out, steps: 2, seeds: 2, evalProblems: 8, scale: { promptsPerStep: 2, maxNewTokens: 32 }, log: () => {} });
}, 600_000);

const trainedPerStep = (runDir: string) =>
  fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { trainedSequences: number; generatedTokens: number }).trainedSequences);

test("Octopus generates n and trains on 2n; GRPO-n and GRPO-2n generate and train on n and 2n", () => {
  expect(Object.keys(result.arms)).toEqual(["octopus", "grpo-n", "grpo-2n"]);
  const n = result.samplesPerPrompt;
  expect(result.arms.octopus).toMatchObject({ generated: n, trained: 2 * n });
  expect(result.arms["grpo-n"]).toMatchObject({ generated: n, trained: n });
  expect(result.arms["grpo-2n"]).toMatchObject({ generated: 2 * n, trained: 2 * n });
  // 2 prompts per step in every arm: what each step trained on, as logged by the runs themselves.
  expect(trainedPerStep(path.join(out, "grpo-n-seed0"))).toEqual([2 * n, 2 * n]);
  expect(trainedPerStep(path.join(out, "grpo-2n-seed1"))).toEqual([4 * n, 4 * n]);
  expect(trainedPerStep(path.join(out, "octopus-stage1-seed0"))).toEqual([4 * n]);
  expect(trainedPerStep(path.join(out, "octopus-stage2-seed1"))).toEqual([4 * n]);
});

test("each metric's mean and standard error over the seeds", () => {
  for (const arm of Object.values(result.arms)) {
    expect(arm.runs).toHaveLength(2);
    const [a, b] = arm.runs.map((r) => r.accT2);
    expect(arm.mean.accT2).toBeCloseTo((a + b) / 2, 12);
    // Two runs: sd = |a − b| / √2, SE = sd / √2 = |a − b| / 2.
    expect(arm.se.accT2).toBeCloseTo(Math.abs(a - b) / 2, 12);
  }
  expect(formatComparison(result).split("\n")[0]).toMatch(/gen\/train\s+Acc@t1\s+Acc@t2\s+Δ\s+Δi→c\s+Δc→i/);
  expect(formatComparison(result)).toMatch(/^octopus\s+8\/16\s+\d+\.\d ± \d+\.\d/m);
});

test("writes compare.json and a compare.html with the table and the plot", () => {
  const saved = JSON.parse(fs.readFileSync(path.join(out, "compare.json"), "utf8")) as MethodComparison;
  expect(saved.arms["grpo-2n"].se.accT2).toBe(result.arms["grpo-2n"].se.accT2);
  const html = fs.readFileSync(path.join(out, "compare.html"), "utf8");
  expect(html).toContain("<svg");
  expect(html).toContain("<td>grpo-2n</td>");
});

test("the CLI refuses a missing SFT model and unknown methods, naming what to do", () => {
  const cli = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
  const missing = spawnSync(process.execPath, [cli, "compare", "--model", path.join(tmp, "nothing"), "--out", path.join(tmp, "o")], { encoding: "utf8" });
  expect(missing.status).toBe(1);
  expect(missing.stderr).toContain("holds no model: run `npx octo-native train` first");
  const unknown = spawnSync(process.execPath, [cli, "compare", "--methods", "ppo"], { encoding: "utf8" });
  expect(unknown.status).toBe(1);
  expect(unknown.stderr).toMatch(/Invalid values:[\s\S]*methods[\s\S]*ppo/);
});
