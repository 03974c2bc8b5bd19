/**
 * Trust-GRPO with a thinking reward (SophiaVL-R1; docs/methods.md §6.3), as pure functions over outcome
 * rewards and judge scores: which responses the judge sees (saturated-group and low-outcome
 * skips), the trust γ of a group, the annealed weight, and the final reward
 *
 *   R = R_out + γ · α · exp(−t / T) · R_think
 *
 * The judge itself (a model on the engine, or an HTTP endpoint) lives in lib/methods/trust-grpo/judge/.
 */
import { endsInFinalBox } from "../../grading/extract";
import { mean } from "../../util/stats";

export interface TrustOptions {
  /** α: weight of the thinking reward at step 0 */
  alpha: number;
  /** T: annealing time constant in steps */
  annealSteps: number;
  /** a response is "correct" for γ when its outcome reward is ≥ this */
  correctAbove: number;
  /** saturated group: every outcome ≥ high or every outcome ≤ low → no judge */
  saturatedHigh: number;
  saturatedLow: number;
  /** responses with an outcome below this get R_think = 0 without a judge call */
  skipBelowOutcome: number;
}

export const DEFAULT_TRUST: TrustOptions = { alpha: 0.3, annealSteps: 100, correctAbove: 0.5, saturatedHigh: 0.9, saturatedLow: 0.1, skipBelowOutcome: 0.2 };

/**
 * The format check of the outcome reward: the response ends in a final answer — a balanced,
 * non-empty `\boxed{}` with reasoning before it and only closing punctuation after it.
 */
export function answerFormatOk(text: string): boolean {
  return endsInFinalBox(text);
}

/** R_out: the verifier's verdict, 0 when the format check fails. */
export function outcomeReward(correct: boolean, formatOk: boolean): number {
  return formatOk && correct ? 1 : 0;
}

/**
 * Per response, whether the judge scores it: none in a saturated group (all outcomes ≥ high or
 * all ≤ low: the thinking reward could not change the ranking's sign, so it is not worth a call),
 * and none whose outcome is below `skipBelowOutcome` (their R_think is 0).
 */
export function responsesToJudge(outcomes: ReadonlyArray<number>, options: TrustOptions = DEFAULT_TRUST): boolean[] {
  const saturated = saturatedGroup(outcomes, options);
  return outcomes.map((o) => !saturated && o >= options.skipBelowOutcome);
}

/** Every outcome ≥ saturatedHigh, or every outcome ≤ saturatedLow. */
export function saturatedGroup(outcomes: ReadonlyArray<number>, options: Pick<TrustOptions, "saturatedHigh" | "saturatedLow"> = DEFAULT_TRUST): boolean {
  return outcomes.every((o) => o >= options.saturatedHigh) || outcomes.every((o) => o <= options.saturatedLow);
}

export interface TrustGamma {
  gamma: number;
  /** mean thinking reward of judged correct / wrong responses (NaN when there is none) */
  muCorrect: number;
  muWrong: number;
}

/**
 * γ of a group: 1 when μ_c ≥ μ_w, else exp(μ_c − μ_w) < 1 — the judge is trusted less when it
 * prefers the reasoning of wrong answers. μ are means over the JUDGED responses only (a skipped
 * response has no judgement, its R_think = 0 is not a score); with no judged correct or no
 * judged wrong response there is no evidence against the judge and γ = 1. Note that with 0/1
 * outcomes and the default low-outcome skip every wrong response is skipped, so γ = 1: the
 * thinking reward then only ranks correct responses among themselves.
 */
export function trustGamma(outcomes: ReadonlyArray<number>, thinking: ReadonlyArray<number | undefined>, options: Pick<TrustOptions, "correctAbove"> = DEFAULT_TRUST): TrustGamma {
  if (outcomes.length !== thinking.length) throw new RangeError(`${outcomes.length} outcomes for ${thinking.length} thinking rewards`);
  const correct: number[] = [], wrong: number[] = [];
  thinking.forEach((t, i) => {
    if (t === undefined) return;
    (outcomes[i] >= options.correctAbove ? correct : wrong).push(t);
  });
  const muCorrect = mean(correct, NaN), muWrong = mean(wrong, NaN); // NaN: no judged response of that kind
  const gamma = correct.length === 0 || wrong.length === 0 || muCorrect >= muWrong ? 1 : Math.exp(muCorrect - muWrong);
  return { gamma, muCorrect, muWrong };
}

/** α · exp(−t / T), t = optimizer steps taken before this one (the first step gets α). */
export function annealedThinkingWeight(step: number, options: Pick<TrustOptions, "alpha" | "annealSteps">): number {
  if (!(options.annealSteps > 0)) throw new RangeError(`trust annealing T = ${options.annealSteps} must be positive`);
  return options.alpha * Math.exp(-step / options.annealSteps);
}

export interface TrustGroupRewards {
  rewards: number[];
  gamma: TrustGamma;
  /** per response: the thinking reward used (0 for skipped) */
  thinking: number[];
}

/**
 * The group's rewards: R = R_out + γ · α·exp(−t/T) · R_think, where `judged[i]` is the judge's
 * score of response i in [0, 1], or undefined when it was skipped (R_think = 0).
 */
export function trustRewards(outcomes: ReadonlyArray<number>, judged: ReadonlyArray<number | undefined>, step: number, options: TrustOptions = DEFAULT_TRUST): TrustGroupRewards {
  const gamma = trustGamma(outcomes, judged, options);
  const weight = annealedThinkingWeight(step, options);
  const thinking = judged.map((t) => {
    if (t === undefined) return 0;
    if (!(t >= 0 && t <= 1)) throw new RangeError(`thinking reward ${t} must lie in [0, 1] (judges clip their scores)`);
    return t;
  });
  return { rewards: outcomes.map((o, i) => o + gamma.gamma * weight * thinking[i]), gamma, thinking };
}
