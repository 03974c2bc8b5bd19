// Seeded pseudo-random numbers and comparisons for tests: the same data on every run.

/** The library's seeded PRNG (mulberry32), under the name the tests use. */
export { seededRandom as mulberry32 } from "../../lib/util/random";

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
