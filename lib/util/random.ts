/**
 * Seeded randomness for everything the control layer decides (data order, pairing order,
 * demo data): the same stream on every machine, never Math.random, so runs reproduce.
 */

/** mulberry32: a small seeded PRNG returning numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates, in place; returns the array. */
export function shuffleInPlace<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** A permutation of 0..n-1 from a seed. */
export function seededPermutation(n: number, seed: number): number[] {
  return shuffleInPlace(Array.from({ length: n }, (_, i) => i), seededRandom(seed));
}

/** Per-step seed of prompt i of an RL step: reproducible, and different across steps and prompts. */
export function rolloutSeed(runSeed: number, step: number, promptIndex: number): number {
  return ((runSeed * 1_000_003 + step * 10_007 + promptIndex * 101) >>> 0) % 2 ** 31;
}
