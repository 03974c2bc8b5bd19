// Each method recipe (SCoRe I/II, Trust-GRPO, SRT, Octopus + SRT) runs a couple of steps on the
// quick demo's SFT model through runTraining, and writes its method metrics to metrics.jsonl.
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems } from "../lib/demo/arithmetic";
import { demoMethodConfig, type MethodRecipe } from "../lib/demo/method-demos";
import { Model } from "../lib/engine/model";
import { TextTokenizer } from "../lib/engine/tokenizer";
import { createMethodHook, type PromptRollouts } from "../lib/methods";
import { DEFAULT_SEPARATOR } from "../lib/methods/octopus/octopus";
import type { RunConfig } from "../lib/rl/config";
import type { Example } from "../lib/rl/data";
import { encodePrompt, promptOptions } from "../lib/rl/prompts";
import { runTraining } from "../lib/rl/run";
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
  // Stage I rewards turn 2 only, and the quick demo's model gets few of them right: a step's 8
  // rewards are often all 0 (no advantage, no policy gradient), and at step 1 the KL gradient is 0
  // too (the policy is the reference). A small entropy bonus is a gradient that does not depend on
  // the rewards, so step 1 always updates: Adam's first step moves every parameter with a nonzero
  // gradient by about lr (2.5e-5, the first warm-up step), whatever the gradient's size.
  const stage1 = await run("score-stage1", "score1", 2, { loss: { entropyCoef: 0.01 } });
  expect(stage1.lines).toHaveLength(2);
  // Turn 2's prompt is prompt ⊕ y1 ⊕ marker. The cache holds each turn-1 sequence but its last
  // sampled token (never fed to the model), so each sample i (n_i tokens) reuses exactly
  // P + n_i − 1 tokens, of P + n_i when turn 1 stopped on the marker (y1 ⊕ marker is what was
  // sampled) or of P + n_i + |marker| when it ended otherwise (the marker is appended). Every
  // training prompt has the same length P, so the step's reuse is (8P + G − 8) / (8P + G + k·|marker|)
  // for G generated turn-1 tokens and some number k ∈ [0, 8] of samples that did not stop on the
  // marker: exact for whatever was sampled.
  const tokenizer = TextTokenizer.fromDir(sftDir);
  const promptLengths = new Set(examples.map((e) => encodePrompt(e, tokenizer, promptOptions(stage1.config)).length));
  expect(promptLengths.size).toBe(1);
  const [P] = promptLengths;
  const markerTokens = tokenizer.encode(DEFAULT_SEPARATOR, { addSpecialTokens: false }).length;
  for (const m of stage1.lines) {
    expect(m.methodMetrics).toMatchObject({ stage: 1 });
    for (const key of ["turn1Accuracy", "turn2Accuracy", "delta", "deltaIncorrectToCorrect", "deltaCorrectToIncorrect"]) expect(typeof m.methodMetrics[key]).toBe("number");
    expect(m.methodMetrics.turn1Accuracy).toBe(m.accuracyO1);
    expect(m.methodMetrics.turn2Accuracy).toBe(m.accuracyFinal);
    // every episode made two attempts
    expect(Object.values(m.transitions as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(2 * 4);
    // prompt + turn 1 (+ the marker it stopped on) came from the cache: all of turn 2's prompt but a token or the marker
    const reused = 8 * P + m.generatedTokens - 8;
    const possible = Array.from({ length: 9 }, (_, k) => reused / (8 * P + m.generatedTokens + k * markerTokens));
    expect(possible.some((r) => Math.abs(r - m.methodMetrics.turn2PrefixReuse) < 1e-12)).toBe(true);
    expect(m.trainedSequences).toBe(2 * 4);
    expect(m.gradNorm).toBeGreaterThan(0); // the entropy bonus: an update every step
  }
  // The first step's policy is the reference: the KL is 0. The second step's policy has taken
  // that update, so its KL (on turn 1 and 2) is > 0: ~1e-4 here even when every reward is 0,
  // four orders of magnitude above the float32 rounding of k3 (which could only blur a KL ~1e-8).
  expect(stage1.lines[0].kl).toBe(0);
  expect(stage1.lines[1].kl).toBeGreaterThan(0);
  const stage2 = await run("score-stage2", "score2", 1, { model: { path: stage1.summary.finalCheckpoint } });
  expect(stage2.lines[0].methodMetrics.stage).toBe(2);
}, 300_000);

/**
 * One Trust-GRPO step through the run's own hook and judge, on crafted rollouts instead of sampled
 * ones: a group with 2 right and 2 wrong answers (not saturated: the 2 right ones go to the judge,
 * the 2 wrong ones are skipped for their low outcome) and an all-wrong group (saturated: no call).
 * The sampled runs may judge nothing at all: the quick demo's model answers few problems right, so
 * its groups of 4 are mostly all wrong, and saturated.
 */
async function craftedTrustStep(config: RunConfig) {
  const policy = await Model.load(sftDir, { device: "cpu" });
  const tokenizer = TextTokenizer.fromDir(sftDir);
  const hook = await createMethodHook({ config, policy, tokenizer }, sftDir);
  try {
    const group = (example: Example, answers: number[]): PromptRollouts => {
      const texts = answers.map((a) => `${a} \\boxed{${a}}`);
      const samples = texts.map((t) => {
        const tokens = tokenizer.encode(t, { addSpecialTokens: false });
        return { tokens, logprobs: new Float32Array(tokens.length), finishReason: "eos" as const };
      });
      return { example, promptIds: encodePrompt(example, tokenizer, promptOptions(config)), samples, texts, seed: 1 };
    };
    const [a, b] = examples.map((e) => ({ example: e, right: Number(e.answer) }));
    const builds = await hook.buildGroups([
      group(a.example, [a.right, a.right + 1, a.right, a.right - 1]),
      group(b.example, [b.right + 1, b.right + 2, b.right - 1, b.right + 1]),
    ], 1);
    const { metrics } = await hook.finishStep(1, { kl: 0 });
    return { rewards: builds.map((g) => g.rollouts.map((r) => r.reward)), metrics: metrics as Record<string, number> };
  } finally {
    hook.dispose();
    policy.dispose();
  }
}

test("Trust-GRPO with the HTTP judge on a loopback stub: γ, thinking reward and skips in the metrics", async () => {
  let calls = 0;
  const replies: string[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls++;
      const content = calls % 3 === 0 ? "no idea" : "Score: 0.5";
      replies.push(content);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ choices: [{ message: { content } }] }));
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

    // The judge's part for certain: crafted rollouts send exactly the 2 right answers to the stub.
    const crafted = await craftedTrustStep(config);
    const t = crafted.metrics;
    expect([t.judgedResponses, t.skippedLowOutcome, t.skippedSaturatedGroups, t.formatFailures]).toEqual([2, 2, 1, 0]);
    expect(calls).toBe(judged + 2);
    const scores = replies.slice(judged).map((r) => (r === "no idea" ? 0 : 0.5)); // unparseable: fallbackScore 0
    expect(t.unparseableJudgements).toBe(replies.slice(judged).filter((r) => r === "no idea").length);
    expect(t.thinkingReward).toBeCloseTo((scores[0] + scores[1]) / 2, 12);
    // no judged wrong answer, so no evidence against the judge: γ = 1; R = R_out + γ·0.3·R_think at step 1
    expect(t.gamma).toBe(1);
    expect(t.thinkingWeight).toBeCloseTo(0.3, 12);
    const [mixed, allWrong] = crafted.rewards;
    expect([mixed[1], mixed[3]]).toEqual([0, 0]);
    expect(mixed[0] + mixed[2]).toBeCloseTo(2 + 0.3 * (scores[0] + scores[1]), 12);
    expect(allWrong).toEqual([0, 0, 0, 0]);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}, 300_000);

test("Trust-GRPO with the engine judge (the demo model itself, a smoke test of the path)", async () => {
  const { lines, config } = await run("trust-grpo", "trust-engine", 1);
  const t = lines[0].methodMetrics;
  expect(t.judgedResponses + t.skippedLowOutcome + 4 * t.skippedSaturatedGroups).toBe(2 * 4);
  if (t.judgedResponses > 0) {
    expect(t.thinkingReward).toBeGreaterThanOrEqual(0);
    expect(t.thinkingReward).toBeLessThanOrEqual(1);
  }
  // The engine judge for certain: crafted rollouts send exactly 2 responses to it.
  const crafted = (await craftedTrustStep(config)).metrics;
  expect([crafted.judgedResponses, crafted.skippedLowOutcome, crafted.skippedSaturatedGroups]).toEqual([2, 2, 1]);
  expect(crafted.thinkingReward).toBeGreaterThanOrEqual(0);
  expect(crafted.thinkingReward).toBeLessThanOrEqual(1);
  expect(crafted.unparseableJudgements).toBeLessThanOrEqual(2);
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
    // hard rewards: 1 for each vote of its group's majority, so their mean is the mean majority share
    expect(s.pseudoReward).toBeCloseTo(s.majorityShare, 12);
    // > 0 as soon as one of the step's 8 samples has a parseable answer (its own cluster is a
    // share of 1/4): the SFT model boxes an answer in ~3 of 4 samples, so all 8 lacking one is a ~1e-5 event
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
  // The SFT cold start trains on responses that all carry the marker: ~9 in 10 samples write it
  // (the quick demo's evaluations), so none of the 8 doing so is a ~1e-8 event.
  expect(m.markerRate).toBeGreaterThan(0);
}, 300_000);
