/**
 * SCoRe — two-attempt self-correction (docs/methods.md §6.2), as pure functions over token ids, rewards
 * and masks: the token layout of a two-turn episode, the per-token loss masks and KL
 * coefficients of Stage I and Stage II, and the per-turn returns.
 *
 * One episode is one training sequence:
 *
 *   x (turn-1 prompt) ⊕ y1 ⊕ I (the correction instruction) ⊕ y2
 *
 * x and I are context (no loss, no KL: the policy did not sample them); y1 and y2 are the two
 * attempts. Turn 2 is generated from x ⊕ y1 ⊕ I by the sampler's continuation, so these are
 * exactly the tokens the policy saw.
 */

/** The instruction of the SCoRe paper (MATH): it hints at a possible error without revealing correctness. */
export const SCORE_INSTRUCTION =
  "There might be an error in the solution above because of lack of understanding of the question. Please correct the error, if any, and rewrite the solution.";

export type ScoreStage = 1 | 2;

/** Spans over the response tokens (what follows x): y1 = [0, y1End), I = [y1End, instructionEnd), y2 = [instructionEnd, length). */
export interface TwoTurnTokens {
  /** [length] y1 ⊕ I ⊕ y2 */
  ids: Int32Array;
  y1End: number;
  instructionEnd: number;
  length: number;
}

export function twoTurnTokens(y1: ArrayLike<number>, instruction: ArrayLike<number>, y2: ArrayLike<number>): TwoTurnTokens {
  const ids = new Int32Array(y1.length + instruction.length + y2.length);
  ids.set(Array.from(y1), 0);
  ids.set(Array.from(instruction), y1.length);
  ids.set(Array.from(y2), y1.length + instruction.length);
  return { ids, y1End: y1.length, instructionEnd: y1.length + instruction.length, length: ids.length };
}

export interface ScoreKl {
  /** β1: the default KL, on every generated token */
  beta1: number;
  /** β2: Stage I's strong KL on the turn-1 tokens (0.1; 0.25 for code) */
  beta2: number;
}

export interface ScoreMasks {
  /** [length] 1 where a response token gets the policy loss */
  lossMask: Float32Array;
  /** [length] the KL coefficient of each response token (the trainer runs with klCoef 1) */
  klCoefficients: Float32Array;
  /** [length] 0 for y1 (and I), 1 for y2: which turn's advantage a token takes */
  turnOfToken: Uint8Array;
}

/**
 * Stage I: the policy loss on y2 only (the reward is r(y2); y1 is kept near the reference so
 * the model does not learn to collapse turn 2 onto turn 1), KL β2 on y1 and β1 on y2.
 * Stage II: the loss on y1 and y2, KL β1 on both. I carries neither in either stage.
 */
export function scoreMasks(tokens: Pick<TwoTurnTokens, "y1End" | "instructionEnd" | "length">, stage: ScoreStage, kl: ScoreKl): ScoreMasks {
  if (stage !== 1 && stage !== 2) throw new RangeError(`SCoRe stage ${String(stage)} must be 1 or 2`);
  const { y1End, instructionEnd, length } = tokens;
  if (!(0 <= y1End && y1End <= instructionEnd && instructionEnd <= length)) throw new RangeError(`SCoRe spans out of order: ${JSON.stringify(tokens)}`);
  const lossMask = new Float32Array(length);
  const klCoefficients = new Float32Array(length);
  const turnOfToken = new Uint8Array(length);
  turnOfToken.fill(1, instructionEnd);
  lossMask.fill(1, instructionEnd);
  klCoefficients.fill(kl.beta1, instructionEnd);
  if (stage === 1) {
    klCoefficients.fill(kl.beta2, 0, y1End);
  } else {
    lossMask.fill(1, 0, y1End);
    klCoefficients.fill(kl.beta1, 0, y1End);
  }
  return { lossMask, klCoefficients, turnOfToken };
}

export interface TurnReturns {
  /** the return credited to y1's tokens */
  turn1: number;
  /** the return credited to y2's tokens */
  turn2: number;
}

/**
 * Per-turn rewards and their returns. Stage I rewards turn 2 only: r̂1 = 0, r̂2 = r(y2).
 * Stage II rewards both, with the self-correction bonus on turn 2: r̂1 = r(y1),
 * r̂2 = r(y2) + α·(r(y2) − r(y1)). Returns G1 = r̂1 + γ·r̂2, G2 = r̂2; SCoRe uses γ = 0
 * (each turn is credited with its own reward only).
 */
export function scoreTurnReturns(r1: number, r2: number, stage: ScoreStage, options: { alpha: number; gamma: number }): TurnReturns {
  if (stage !== 1 && stage !== 2) throw new RangeError(`SCoRe stage ${String(stage)} must be 1 or 2`);
  const reward1 = stage === 1 ? 0 : r1;
  const reward2 = stage === 1 ? r2 : r2 + options.alpha * (r2 - r1);
  return { turn1: reward1 + options.gamma * reward2, turn2: reward2 };
}
