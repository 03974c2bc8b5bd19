// SCoRe (docs/methods.md §6.2): two-turn token layout, Stage I / II loss masks and per-token KL
// coefficients, per-turn returns with γ = 0 and the Stage II bonus; per-turn advantages in the
// RL step; and per-token KL coefficients through the trainer against a TS reference of the
// KL term.
import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import type { GroupSample } from "../lib/methods";
import { scoreMasks, scoreTurnReturns, twoTurnTokens } from "../lib/methods/score/score";
import { groupAdvantages } from "../lib/rl/advantages";
import type { RunConfig } from "../lib/rl/config";
import { parseConfig } from "../lib/rl/config";
import { assignAdvantages } from "../lib/rl/step";
import { TINY_SPECS } from "./helpers/tiny-models";

const kl = { beta1: 0.01, beta2: 0.1 };

describe("two-turn layout and masks", () => {
  // y1 = 3 tokens, I = 2 tokens, y2 = 4 tokens
  const tokens = twoTurnTokens([11, 12, 13], [90, 91], [21, 22, 23, 24]);

  test("the response is y1 ⊕ I ⊕ y2 with exact span boundaries", () => {
    expect(Array.from(tokens.ids)).toEqual([11, 12, 13, 90, 91, 21, 22, 23, 24]);
    expect(tokens).toMatchObject({ y1End: 3, instructionEnd: 5, length: 9 });
  });

  test("Stage I: loss on y2 only; KL β2 on y1, β1 on y2, none on the instruction", () => {
    const m = scoreMasks(tokens, 1, kl);
    expect(Array.from(m.lossMask)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1]);
    expect(Array.from(m.klCoefficients)).toEqual([0.1, 0.1, 0.1, 0, 0, 0.01, 0.01, 0.01, 0.01].map(Math.fround));
    expect(Array.from(m.turnOfToken)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1]);
  });

  test("Stage II: loss on both turns; KL β1 on both; instruction untouched", () => {
    const m = scoreMasks(tokens, 2, kl);
    expect(Array.from(m.lossMask)).toEqual([1, 1, 1, 0, 0, 1, 1, 1, 1]);
    expect(Array.from(m.klCoefficients)).toEqual([0.01, 0.01, 0.01, 0, 0, 0.01, 0.01, 0.01, 0.01].map(Math.fround));
  });

  test("empty turns and an empty instruction keep the masks aligned", () => {
    const empty = twoTurnTokens([], [], [5, 6]);
    expect(Array.from(scoreMasks(empty, 1, kl).lossMask)).toEqual([1, 1]);
    const noTurnTwo = twoTurnTokens([1, 2], [3], []);
    expect(Array.from(scoreMasks(noTurnTwo, 1, kl).klCoefficients)).toEqual([0.1, 0.1, 0].map(Math.fround));
    expect(() => scoreMasks({ y1End: 4, instructionEnd: 2, length: 5 }, 1, kl)).toThrow(/out of order/);
    expect(() => scoreMasks(noTurnTwo, 3 as 1, kl)).toThrow(/stage 3/);
  });
});

describe("per-turn returns", () => {
  const options = { alpha: 10, gamma: 0 };
  test("Stage I rewards turn 2 only", () => {
    for (const [r1, r2] of [[0, 0], [0, 1], [1, 0], [1, 1]]) expect(scoreTurnReturns(r1, r2, 1, options)).toEqual({ turn1: 0, turn2: r2 });
  });
  test("Stage II: r1 on turn 1, r2 + α(r2 − r1) on turn 2, γ = 0: no credit across turns", () => {
    expect(scoreTurnReturns(0, 1, 2, options)).toEqual({ turn1: 0, turn2: 11 }); // w→c: the bonus
    expect(scoreTurnReturns(1, 0, 2, options)).toEqual({ turn1: 1, turn2: -10 }); // c→w: the penalty
    expect(scoreTurnReturns(1, 1, 2, options)).toEqual({ turn1: 1, turn2: 1 });
    expect(scoreTurnReturns(0, 0, 2, options)).toEqual({ turn1: 0, turn2: 0 });
  });
  test("γ > 0 credits turn 1 with the discounted turn-2 reward", () => {
    expect(scoreTurnReturns(0, 1, 2, { alpha: 10, gamma: 0.5 })).toEqual({ turn1: 5.5, turn2: 11 });
  });
});

describe("per-turn advantages in the RL step", () => {
  test("each token takes its turn's group advantage; prompt and instruction tokens get the turn-1 or 0 value as laid out", () => {
    const config = parseConfig({ advantage: { estimator: "rloo" } }) as RunConfig;
    const promptLength = 2;
    const returns = [[0, 11], [1, -10], [1, 1], [0, 0]];
    const samples: GroupSample[] = returns.map((r) => {
      const t = twoTurnTokens([1, 2], [3], [4, 5, 6]);
      const m = scoreMasks(t, 2, kl);
      return { response: t.ids, lossMask: m.lossMask, klMask: m.klCoefficients, returns: r, segmentOfToken: m.turnOfToken };
    });
    const sequences: TrainSequence[] = samples.map((s) => ({ tokens: new Int32Array(promptLength + s.response.length), lossMask: new Float32Array(promptLength + s.response.length) }));
    assignAdvantages(sequences, samples, samples.map(() => promptLength), 4, config);
    const turn1 = groupAdvantages(returns.map((r) => r[0]), 4, "rloo");
    const turn2 = groupAdvantages(returns.map((r) => r[1]), 4, "rloo");
    sequences.forEach((s, i) => {
      const a = s.advantage as Float32Array;
      expect(Array.from(a)).toEqual([0, 0, turn1[i], turn1[i], turn1[i], turn2[i], turn2[i], turn2[i]]);
    });
    // rloo per turn: the w→c episode's turn 2 beats the others' mean by 11 − (−10 + 1 + 0)/3
    expect(turn2[0]).toBeCloseTo(11 - (-10 + 1 + 0) / 3, 5);
  });

  test("a single return channel keeps the sequence advantage a number (the Octopus/GRPO path)", () => {
    const config = parseConfig({}) as RunConfig;
    const samples: GroupSample[] = [0, 1].map((r) => ({ response: Int32Array.of(1, 2), lossMask: [1, 1], klMask: [1, 1], returns: [r] }));
    const sequences: TrainSequence[] = samples.map(() => ({ tokens: Int32Array.of(9, 1, 2), lossMask: [0, 1, 1] }));
    assignAdvantages(sequences, samples, [1, 1], 2, config);
    expect(sequences.map((s) => s.advantage)).toEqual(Array.from(groupAdvantages([0, 1], 2, "grpo")));
  });
});

describe("per-token KL coefficients through the trainer", () => {
  test("klCoef 1 with the β_t mask gives Σ β_t·k3_t / #KL tokens (token-mean), checked against the same sum in TS", async () => {
    const spec = TINY_SPECS.qwen2;
    const policy = await Model.create(spec, 31, { device: "cpu" });
    const reference = await Model.create(spec, 32, { device: "cpu" });
    const tokens = Int32Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % spec.vocabSize);
    const promptLength = 3;
    const layout = twoTurnTokens(tokens.subarray(promptLength, 6), tokens.subarray(6, 8), tokens.subarray(8));
    const masks = scoreMasks(layout, 1, kl);
    const lossMask = new Float32Array(tokens.length), klMask = new Float32Array(tokens.length);
    lossMask.set(masks.lossMask, promptLength);
    klMask.set(masks.klCoefficients, promptLength);
    const [lp] = await PolicyTrainer.logprobs(policy, [tokens]);
    const [ref] = await PolicyTrainer.logprobs(reference, [tokens]);
    let penalty = 0, count = 0;
    for (let t = 0; t < tokens.length; t++) {
      if (klMask[t] === 0) continue;
      const d = ref[t] - lp[t];
      penalty += klMask[t] * (Math.exp(d) - d - 1);
      count++;
    }
    expect(count).toBe(7); // 3 turn-1 tokens + 4 turn-2 tokens; the instruction carries none
    const trainer = new PolicyTrainer(policy, { schedule: { lr: 1e-3, warmupSteps: 0, kind: "constant" } });
    const report = await trainer.trainStep([{ tokens, lossMask, klMask, advantage: 0, oldLogprobs: lp, refLogprobs: ref }], {
      objective: "policy",
      loss: { klCoef: 1, klEstimator: "k3", aggregation: "token-mean" },
    });
    expect(report.loss).toBeCloseTo(penalty / count, 5);
    expect(report.stats.klLoss).toBeCloseTo(penalty / count, 5);
    policy.dispose();
    reference.dispose();
  });
});
