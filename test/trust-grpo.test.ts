// Trust-GRPO (docs/methods.md §6.3): γ for crafted groups (μc ≥ μw → 1, otherwise exp(μc − μw)), the
// saturated-group and low-outcome skips, outcome 0 when the format fails, the annealed weight
// and the final reward R = R_out + γ·α·exp(−t/T)·R_think.
import {
  annealedThinkingWeight,
  answerFormatOk,
  DEFAULT_TRUST,
  outcomeReward,
  responsesToJudge,
  saturatedGroup,
  trustGamma,
  trustRewards,
} from "../lib/methods/trust-grpo/trust-grpo";

describe("trust γ", () => {
  test("μc ≥ μw → 1", () => {
    expect(trustGamma([1, 1, 0.3, 0.3], [0.9, 0.7, 0.2, 0.4])).toMatchObject({ gamma: 1, muCorrect: 0.8 });
    expect(trustGamma([1, 0.3], [0.5, 0.5]).gamma).toBe(1); // equal means: trusted
  });
  test("μc < μw → exp(μc − μw)", () => {
    const g = trustGamma([1, 1, 0.3, 0.3], [0.2, 0.4, 0.9, 0.7]);
    expect(g.muCorrect).toBeCloseTo(0.3, 12);
    expect(g.muWrong).toBeCloseTo(0.8, 12);
    expect(g.gamma).toBeCloseTo(Math.exp(-0.5), 12);
  });
  test("only judged responses enter μ; no judged correct or no judged wrong → γ = 1", () => {
    // response 3 is wrong but skipped: its missing score does not drag μw down to 0
    expect(trustGamma([1, 0.3, 0], [0.2, 0.6, undefined]).gamma).toBeCloseTo(Math.exp(0.2 - 0.6), 12);
    expect(trustGamma([1, 1, 0, 0], [0.1, 0.2, undefined, undefined]).gamma).toBe(1);
    expect(trustGamma([0.3, 0.3], [0.9, 0.1]).gamma).toBe(1);
    expect(() => trustGamma([1], [])).toThrow(/1 outcomes for 0/);
  });
});

describe("skips", () => {
  test("saturated groups skip the judge entirely (all ≥ 0.9 or all ≤ 0.1)", () => {
    expect(saturatedGroup([1, 1, 0.95])).toBe(true);
    expect(saturatedGroup([0, 0.1, 0])).toBe(true);
    expect(saturatedGroup([1, 0])).toBe(false);
    expect(responsesToJudge([1, 1, 1, 1])).toEqual([false, false, false, false]);
    expect(responsesToJudge([0, 0, 0.05, 0])).toEqual([false, false, false, false]);
  });
  test("responses with outcome < 0.2 are not judged; the rest are", () => {
    expect(responsesToJudge([1, 0, 0.19, 0.2, 0.5])).toEqual([true, false, false, true, true]);
  });
  test("skipped responses get R_think = 0", () => {
    const r = trustRewards([1, 0, 1, 0], [0.5, undefined, 1, undefined], 0, { ...DEFAULT_TRUST, alpha: 0.3, annealSteps: 10 });
    expect(r.thinking).toEqual([0.5, 0, 1, 0]);
    expect(r.rewards).toEqual([1 + 0.3 * 0.5, 0, 1 + 0.3, 0]);
  });
});

describe("outcome and format", () => {
  test("outcome reward is 0 when the format check fails, whatever the verifier says", () => {
    expect(outcomeReward(true, true)).toBe(1);
    expect(outcomeReward(true, false)).toBe(0);
    expect(outcomeReward(false, true)).toBe(0);
  });
  test("the format check: reasoning, then a final non-empty box, then only closing punctuation", () => {
    expect(answerFormatOk("7+5=12 \\boxed{12}")).toBe(true);
    expect(answerFormatOk("so $\\boxed{12}$.\n")).toBe(true);
    expect(answerFormatOk("\\boxed{12}")).toBe(false); // no reasoning
    expect(answerFormatOk("so \\boxed{ } ")).toBe(false);
    expect(answerFormatOk("so \\boxed{12} and more words")).toBe(false);
    expect(answerFormatOk("so \\boxed{12")).toBe(false);
    expect(answerFormatOk("no answer")).toBe(false);
  });
});

describe("annealing and the final reward", () => {
  test("α·exp(−t/T): α at the first step, α/e after T steps", () => {
    expect(annealedThinkingWeight(0, { alpha: 0.3, annealSteps: 50 })).toBe(0.3);
    expect(annealedThinkingWeight(50, { alpha: 0.3, annealSteps: 50 })).toBeCloseTo(0.3 / Math.E, 12);
    expect(() => annealedThinkingWeight(1, { alpha: 0.3, annealSteps: 0 })).toThrow(/T = 0/);
  });
  test("R = R_out + γ·α·exp(−t/T)·R_think on a group whose judge prefers wrong reasoning", () => {
    const options = { ...DEFAULT_TRUST, alpha: 0.3, annealSteps: 20 };
    const outcomes = [1, 1, 0.4, 0.4];
    const judged = [0.2, 0.4, 0.8, 1.0];
    const r = trustRewards(outcomes, judged, 10, options);
    const gamma = Math.exp(0.3 - 0.9);
    const weight = 0.3 * Math.exp(-10 / 20);
    expect(r.gamma.gamma).toBeCloseTo(gamma, 12);
    r.rewards.forEach((x, i) => expect(x).toBeCloseTo(outcomes[i] + gamma * weight * judged[i], 12));
    expect(() => trustRewards([1], [1.5], 0, options)).toThrow(/\[0, 1\]/);
  });
});
