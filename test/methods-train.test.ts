// Each method recipe (SCoRe I/II, Trust-GRPO, SRT, Octopus + SRT) runs a couple of steps on the
// quick demo's SFT model through runTraining, and writes its method metrics to metrics.jsonl.
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems } from "../lib/demo/arithmetic";
import { demoMethodConfig, type MethodRecipe } from "../lib/demo/method-demos";
import { runTraining } from "../lib/train";
import { quickDemoRun } from "./helpers/quick-demo";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-methods-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const examples = arithmeticProblems(40, 21);
const evalExamples = arithmeticProblems(8, 22);
let sftDir = "";
beforeAll(async () => {
  sftDir = path.join((await quickDemoRun()).dir, "sft");
}, 600_000);

const tiny = { rollout: { promptsPerStep: 2, samplesPerPrompt: 4 } };

async function run(recipe: MethodRecipe, name: string, steps: number, extra: Record<string, unknown> = {}) {
  const runDir = path.join(tmp, name);
  const config = demoMethodConfig(recipe, { modelPath: sftDir, runDir, steps, extra: { ...tiny, ...extra } });
  const summary = await runTraining(config, { examples, evalExamples, quiet: true });
  const lines = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  return { summary, lines, config };
}

test("SCoRe Stage I and II: two turns per rollout, turn 2 from the prefix cache, per-turn accuracies", async () => {
  const stage1 = await run("score-stage1", "score1", 2);
  expect(stage1.lines).toHaveLength(2);
  for (const m of stage1.lines) {
    expect(m.methodMetrics).toMatchObject({ stage: 1 });
    for (const key of ["turn1Accuracy", "turn2Accuracy", "delta", "deltaIncorrectToCorrect", "deltaCorrectToIncorrect"]) expect(typeof m.methodMetrics[key]).toBe("number");
    expect(m.methodMetrics.turn1Accuracy).toBe(m.accuracyO1);
    expect(m.methodMetrics.turn2Accuracy).toBe(m.accuracyFinal);
    // every episode made two attempts
    expect(Object.values(m.transitions as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(2 * 4);
    // prompt + turn 1 (+ the marker it stopped on) came from the cache: most of turn 2's prompt
    expect(m.methodMetrics.turn2PrefixReuse).toBeGreaterThan(0.5);
    expect(m.trainedSequences).toBe(2 * 4);
  }
  // the first step's policy is the reference: the KL is 0; the second has moved (KL on turn 1 and 2)
  expect(stage1.lines[0].kl).toBe(0);
  expect(stage1.lines[1].kl).toBeGreaterThan(0);
  const stage2 = await run("score-stage2", "score2", 1, { model: { path: stage1.summary.finalCheckpoint } });
  expect(stage2.lines[0].methodMetrics.stage).toBe(2);
}, 300_000);

test("Trust-GRPO with the HTTP judge on a loopback stub: γ, thinking reward and skips in the metrics", async () => {
  let calls = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ choices: [{ message: { content: calls % 3 === 0 ? "no idea" : "Score: 0.5" } }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    const { lines, config } = await run("trust-grpo", "trust", 2, { method: { trustGrpo: { judge: { backend: "http", url, modelPath: undefined, timeoutMs: 5000 } } } });
    let judged = 0;
    for (const m of lines) {
      const t = m.methodMetrics;
      for (const key of ["gamma", "thinkingWeight", "judgedResponses", "unparseableJudgements", "skippedSaturatedGroups", "skippedLowOutcome", "formatFailures"]) expect(t).toHaveProperty(key);
      expect(t.gamma).toBeGreaterThan(0);
      expect(t.gamma).toBeLessThanOrEqual(1);
      expect(t.thinkingWeight).toBeCloseTo(0.3 * Math.exp(-(m.step - 1) / config.run.steps), 12);
      // each response is either judged, skipped for a low outcome, or in a saturated group
      expect(t.judgedResponses + t.skippedLowOutcome + 4 * t.skippedSaturatedGroups).toBe(2 * 4);
      if (t.judgedResponses > 0) expect(t.thinkingReward).toBeGreaterThanOrEqual(0);
      judged += t.judgedResponses;
    }
    expect(calls).toBe(judged);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}, 300_000);

test("Trust-GRPO with the engine judge (the demo model itself, a smoke test of the path)", async () => {
  const { lines } = await run("trust-grpo", "trust-engine", 1);
  const t = lines[0].methodMetrics;
  expect(t.judgedResponses + t.skippedLowOutcome + 4 * t.skippedSaturatedGroups).toBe(2 * 4);
  if (t.judgedResponses > 0) {
    expect(t.thinkingReward).toBeGreaterThanOrEqual(0);
    expect(t.thinkingReward).toBeLessThanOrEqual(1);
  }
}, 300_000);

test("SRT: pseudo-label metrics, the majority-share filter, label accuracy, the alarm; fixed labels and early stopping", async () => {
  const hard = await run("srt", "srt", 2);
  for (const m of hard.lines) {
    const s = m.methodMetrics;
    for (const key of ["pseudoReward", "majorityShare", "labelAccuracy", "dominantAnswerShare", "collapseAlarm", "collapseSignals"]) expect(s).toHaveProperty(key);
    expect(s.filteredGroups + s.trainedGroups).toBe(2);
    expect(m.trainedSequences).toBe(4 * s.trainedGroups);
    expect(s.labelAccuracy).toBeGreaterThanOrEqual(0);
    expect(s.labelAccuracy).toBeLessThanOrEqual(1);
    expect(s.majorityShare).toBeGreaterThan(0);
  }
  // soft rewards and a strict filter (only unanimous prompts train; a step with none makes no update)
  const filtered = await run("srt", "srt-filter", 1, { method: { srt: { majorityThreshold: 1.0, reward: "soft" } } });
  expect(filtered.lines[0].trainedSequences).toBe(4 * filtered.lines[0].methodMetrics.trainedGroups);

  const guarded = await run("srt", "srt-fixed", 3, { method: { srt: { fixedLabels: true, earlyStopping: { every: 1, examples: 8, patience: 1 } } } });
  const evaluations = guarded.lines.map((m) => m.methodMetrics.earlyStopping);
  expect(evaluations.every((e) => typeof e.accuracy === "number")).toBe(true);
  // stops at the first evaluation that does not beat the best so far (or runs all 3 steps)
  const accuracies = evaluations.map((e) => e.accuracy as number);
  const firstNoImprovement = accuracies.findIndex((a, i) => i > 0 && a <= Math.max(...accuracies.slice(0, i)));
  expect(guarded.summary.steps).toBe(firstNoImprovement < 0 ? 3 : firstNoImprovement + 1);
  if (firstNoImprovement >= 0) expect(guarded.summary.stoppedEarly).toMatch(/early stopping/);
}, 300_000);

test("SRT resumes bit-exactly: the collapse trace, early-stopping history and fixed labels carry over", async () => {
  const extra = { ...tiny, method: { srt: { fixedLabels: true, earlyStopping: { every: 1, examples: 8, patience: 5 } } } };
  const config = (name: string) => demoMethodConfig("srt", { modelPath: sftDir, runDir: path.join(tmp, name), steps: 3, extra });
  const withoutTimes = (dir: string) =>
    fs.readFileSync(path.join(tmp, dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => {
      const m = JSON.parse(l);
      delete m.seconds;
      delete m.generationTokensPerSecond;
      return m;
    });
  await runTraining(config("srt-straight"), { examples, evalExamples, quiet: true });
  await runTraining(config("srt-resumed"), { examples, evalExamples, quiet: true, stopAfterSteps: 2 });
  await runTraining(config("srt-resumed"), { examples, evalExamples, quiet: true, resume: true });
  expect(withoutTimes("srt-resumed")).toEqual(withoutTimes("srt-straight"));
  expect(withoutTimes("srt-resumed").map((m) => m.methodMetrics.earlyStopping.evaluations)).toEqual([1, 2, 3]);
}, 300_000);

test("Octopus + SRT: pairing against the majority answer, label accuracy and hidden-label accuracies", async () => {
  const { lines } = await run("octopus-srt", "octopus-srt", 1, { optimizer: { lr: 5e-5 } });
  const m = lines[0];
  expect(m.methodMetrics).toHaveProperty("labelAccuracy");
  expect(m.methodMetrics.filteredGroups + m.methodMetrics.trainedGroups).toBe(2);
  expect(m.trainedSequences).toBe(2 * 4 * m.methodMetrics.trainedGroups);
  expect(Object.values(m.augmented as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(4 * m.methodMetrics.trainedGroups);
  expect(m.markerRate).toBeGreaterThan(0);
}, 300_000);
