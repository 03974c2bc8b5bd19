/** Small statistics over plain number arrays. */

/**
 * The arithmetic mean, summed left to right (so results are bit-stable); `whenEmpty` for an empty
 * array (0 for metrics and rewards, NaN where "no data" must stay visible).
 */
export function mean(xs: readonly number[], whenEmpty = 0): number {
  return xs.length === 0 ? whenEmpty : xs.reduce((a, b) => a + b, 0) / xs.length;
}
