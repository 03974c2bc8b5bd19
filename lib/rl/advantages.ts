/**
 * Advantage estimators and DAPO reward shaping (docs/methods.md §5), as pure functions over plain
 * reward arrays.
 *
 * Layout: `rewards` is the flat batch, group after group — samples
 * [g·groupSize, (g+1)·groupSize) are the rollouts of prompt g (for Octopus, the n
 * originals then the n augmented samples of docs/methods.md §6.1). Arithmetic is in float64; the
 * result is the Float32Array the trainer takes (TrainSequence.advantage).
 */

export type AdvantageEstimator = "grpo" | "rloo" | "reinforce_baseline";

export interface AdvantageOptions {
  /**
   * grpo only: divide by the group std (default true); false is Dr.GRPO's `norm_std=false`
   * (Liu et al. 2025, "Understanding R1-Zero-Like Training"), `R − mean_g`. Dr.GRPO's other half,
   * the seq-mean-token-sum-norm loss aggregation, is in native/core/policy_loss.h.
   */
  normStd?: boolean;
  /** reinforce_baseline only: whiten the baselined rewards over the whole batch (default false). */
  whiten?: boolean;
}

/** Added to the std before dividing (docs/methods.md §5: `std + 1e-6`). */
const STD_EPSILON = 1e-6;

/**
 * Per-sample advantages (docs/methods.md §5), one per reward:
 *
 * - `grpo` (GRPO, Shao et al. 2024, DeepSeekMath):  A_i = (R_i − mean_g R) / (std_g R + 1e-6),
 *   std with Bessel's correction (n − 1). A group of one sample has no spread and gets A = 0.
 *   With `normStd: false` (Dr.GRPO's norm_std=false): A_i = R_i − mean_g R.
 * - `rloo` (RLOO, Ahmadian et al. 2024):  A_i = R_i − mean_{j≠i} R_j = n/(n−1) · (R_i − mean_g R) (leave-one-out
 *   baseline; Σ_i A_i = 0 in every group). A group of one sample has no other sample to
 *   compare with and gets A = 0.
 * - `reinforce_baseline` (REINFORCE++, Hu 2025): A_i = R_i − mean_batch R, the baseline taken
 *   over ALL samples of the batch (groups ignored); with `whiten`, A is then divided by
 *   its batch std (Bessel) + 1e-6 (its batch mean is already 0). A batch of one sample
 *   gets A = 0.
 */
export function groupAdvantages(
  rewards: ArrayLike<number>,
  groupSize: number,
  estimator: AdvantageEstimator,
  options: AdvantageOptions = {},
): Float32Array {
  checkGroups(rewards, groupSize);
  const advantages = new Float32Array(rewards.length);
  if (estimator === "reinforce_baseline") {
    if (allEqual(rewards, 0, rewards.length)) return advantages;
    const baselined = Array.from(rewards, (r) => r - mean(rewards, 0, rewards.length));
    const scale = options.whiten ? besselStd(baselined, 0, baselined.length) + STD_EPSILON : 1;
    baselined.forEach((a, i) => (advantages[i] = a / scale));
    return advantages;
  }
  if (estimator !== "grpo" && estimator !== "rloo") {
    throw new RangeError(`advantage estimator "${String(estimator)}" is not one of grpo, rloo, reinforce_baseline`);
  }
  for (let start = 0; start < rewards.length; start += groupSize) {
    const end = start + groupSize;
    // Exactly 0, not the rounding residue of R − mean amplified by 1/(std + 1e-6).
    if (allEqual(rewards, start, end)) continue;
    const groupMean = mean(rewards, start, end);
    let scale: number;
    if (estimator === "rloo") scale = groupSize / (groupSize - 1);
    else scale = options.normStd === false ? 1 : 1 / (besselStd(rewards, start, end) + STD_EPSILON);
    for (let i = start; i < end; i++) advantages[i] = (rewards[i] - groupMean) * scale;
  }
  return advantages;
}

/**
 * DAPO dynamic sampling (Yu et al. 2025, docs/methods.md §5; DAPO's clip-higher is the
 * clipLow/clipHigh pair of native/core/policy_loss.h): one flag per group, true where the group's rewards are
 * not all equal. A group whose rewards are all equal has zero advantage under every group
 * estimator and contributes no gradient, so it is dropped (and the batch refilled by the
 * caller). Equality is exact: rewards are computed by the same formula from discrete
 * outcomes, so equal outcomes give bit-equal rewards.
 */
export function dynamicSamplingKeep(rewards: ArrayLike<number>, groupSize: number): boolean[] {
  checkGroups(rewards, groupSize);
  const keep: boolean[] = [];
  for (let start = 0; start < rewards.length; start += groupSize) {
    keep.push(!allEqual(rewards, start, start + groupSize));
  }
  return keep;
}

/**
 * DAPO soft overlong punishment (docs/methods.md §5), added to the reward of a response of
 * `length` tokens, with L_max = `maxLength` and L_cache = `cacheLength`:
 *
 *   0                                  if length ≤ L_max − L_cache
 *   ((L_max − L_cache) − length) / L_cache   if L_max − L_cache < length ≤ L_max  (0 → −1)
 *   −1                                 if length > L_max
 *
 * `cacheLength` 0 is a hard step: 0 up to L_max, −1 beyond.
 */
export function overlongPenalty(length: number, maxLength: number, cacheLength: number): number {
  if (!(cacheLength >= 0 && cacheLength <= maxLength)) {
    throw new RangeError(`overlong cacheLength ${cacheLength} must lie in [0, maxLength = ${maxLength}]`);
  }
  const softStart = maxLength - cacheLength;
  if (length <= softStart) return 0;
  if (length > maxLength) return -1;
  return (softStart - length) / cacheLength;
}

function checkGroups(rewards: ArrayLike<number>, groupSize: number): void {
  if (!Number.isInteger(groupSize) || groupSize < 1) {
    throw new RangeError(`groupSize ${groupSize} must be a positive integer`);
  }
  if (rewards.length % groupSize !== 0) {
    throw new RangeError(`${rewards.length} rewards do not split into groups of ${groupSize}`);
  }
  for (let i = 0; i < rewards.length; i++) {
    if (!Number.isFinite(rewards[i])) throw new RangeError(`reward ${i} is ${rewards[i]}; rewards must be finite numbers`);
  }
}

function allEqual(values: ArrayLike<number>, start: number, end: number): boolean {
  for (let i = start + 1; i < end; i++) if (values[i] !== values[start]) return false;
  return true;
}

function mean(values: ArrayLike<number>, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += values[i];
  return sum / (end - start);
}

/** Sample standard deviation (divides by count − 1); 0 for fewer than 2 values. */
function besselStd(values: ArrayLike<number>, start: number, end: number): number {
  const count = end - start;
  if (count < 2) return 0;
  const m = mean(values, start, end);
  let squares = 0;
  for (let i = start; i < end; i++) squares += (values[i] - m) ** 2;
  return Math.sqrt(squares / (count - 1));
}
