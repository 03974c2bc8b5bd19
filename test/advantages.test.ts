// Advantage estimators and DAPO shaping (docs/methods.md §5): hand-computed values, random groups
// against direct formulas, group identities, dynamic-sampling keep/drop, overlong penalty.
import { dynamicSamplingKeep, groupAdvantages, overlongPenalty } from "../lib/rl/advantages";
import { mulberry32 } from "./helpers/random";

const close = (actual: ArrayLike<number>, expected: number[], digits = 5) => {
  expect(actual.length).toBe(expected.length);
  expected.forEach((e, i) => expect(actual[i]).toBeCloseTo(e, digits));
};

/** Random rewards: a mix of binary outcomes and continuous shaped rewards. */
function randomRewards(random: () => number, count: number): number[] {
  const binary = random() < 0.5;
  return Array.from({ length: count }, () => (binary ? (random() < 0.5 ? 1 : 0) : random() * 4 - 2));
}

/** `trials` random batches: 1–5 groups of 2–10 rewards each. */
function* randomBatches(seed: number, trials: number): Generator<{ groupSize: number; groups: number; rewards: number[] }> {
  const random = mulberry32(seed);
  for (let trial = 0; trial < trials; trial++) {
    const groupSize = 2 + Math.floor(random() * 9);
    const groups = 1 + Math.floor(random() * 5);
    yield { groupSize, groups, rewards: randomRewards(random, groupSize * groups) };
  }
}

const sum = (xs: ArrayLike<number>) => Array.from(xs).reduce((a, b) => a + b, 0);

describe("grpo", () => {
  test("hand case: (R − mean) / (Bessel std + 1e-6)", () => {
    // mean 0.5, Bessel std sqrt(1/3) = 0.57735
    const s = Math.sqrt(1 / 3) + 1e-6;
    close(groupAdvantages([1, 0, 0, 1], 4, "grpo"), [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]);
    // two groups are normalised separately: [1,2,3] has mean 2, std 1
    close(groupAdvantages([1, 0, 0, 1, 1, 2, 3, 2], 4, "grpo").subarray(4), [-1 / (Math.sqrt(2 / 3) + 1e-6), 0, 1 / (Math.sqrt(2 / 3) + 1e-6), 0]);
    close(groupAdvantages([1, 2, 3], 3, "grpo"), [-1 / (1 + 1e-6), 0, 1 / (1 + 1e-6)]);
  });

  test("an all-equal group and a group of one give 0", () => {
    expect(Array.from(groupAdvantages([0.7, 0.7, 0.7, 0, 1, 0], 3, "grpo").subarray(0, 3))).toEqual([0, 0, 0]);
    expect(Array.from(groupAdvantages([5, -3, 2], 1, "grpo"))).toEqual([0, 0, 0]);
    expect(Array.from(groupAdvantages([5, -3, 2], 1, "grpo", { normStd: false }))).toEqual([0, 0, 0]);
    // exactly 0, not R − mean's rounding residue (0.7·3/3 ≠ 0.7 in floating point) blown up by 1/1e-6
    for (const estimator of ["grpo", "rloo", "reinforce_baseline"] as const) {
      expect(Array.from(groupAdvantages([0.7, 0.7, 0.7], 3, estimator, { whiten: true }))).toEqual([0, 0, 0]);
    }
  });

  test("normStd=false (Dr.GRPO) is R − mean_g, unscaled", () => {
    close(groupAdvantages([1, 0, 0, 0, 3, 1], 3, "grpo", { normStd: false }), [2 / 3, -1 / 3, -1 / 3, -4 / 3, 5 / 3, -1 / 3]);
  });

  test("random groups: equals the direct formula, mean 0 and Bessel std ~1 per group", () => {
    for (const { groupSize, groups, rewards } of randomBatches(11, 100)) {
      const a = groupAdvantages(rewards, groupSize, "grpo");
      const drGrpo = groupAdvantages(rewards, groupSize, "grpo", { normStd: false });
      expect(a).toBeInstanceOf(Float32Array);
      for (let g = 0; g < groups; g++) {
        const r = rewards.slice(g * groupSize, (g + 1) * groupSize);
        const m = sum(r) / groupSize;
        const std = Math.sqrt(r.reduce((acc, x) => acc + (x - m) ** 2, 0) / (groupSize - 1));
        const ag = a.subarray(g * groupSize, (g + 1) * groupSize);
        r.forEach((x, i) => {
          expect(ag[i]).toBeCloseTo((x - m) / (std + 1e-6), 4);
          expect(drGrpo[g * groupSize + i]).toBeCloseTo(x - m, 5);
        });
        expect(Math.abs(sum(ag))).toBeLessThan(1e-4);
        if (std > 1e-3) {
          const agMean = sum(ag) / groupSize;
          const agStd = Math.sqrt(Array.from(ag).reduce((acc, x) => acc + (x - agMean) ** 2, 0) / (groupSize - 1));
          expect(agStd).toBeCloseTo(1, 3);
        }
      }
    }
  });
});

describe("rloo", () => {
  test("hand case: R_i − mean of the others", () => {
    close(groupAdvantages([1, 0, 0, 0], 4, "rloo"), [1, -1 / 3, -1 / 3, -1 / 3]);
    close(groupAdvantages([2, 4], 2, "rloo"), [-2, 2]);
    expect(Array.from(groupAdvantages([3, 1], 1, "rloo"))).toEqual([0, 0]);
  });

  test("random groups: leave-one-out formula and Σ_i A_i = 0 per group", () => {
    for (const { groupSize, groups, rewards } of randomBatches(12, 100)) {
      const a = groupAdvantages(rewards, groupSize, "rloo");
      for (let g = 0; g < groups; g++) {
        const r = rewards.slice(g * groupSize, (g + 1) * groupSize);
        r.forEach((x, i) => {
          const others = r.filter((_, j) => j !== i);
          expect(a[g * groupSize + i]).toBeCloseTo(x - sum(others) / others.length, 5);
        });
        expect(Math.abs(sum(a.subarray(g * groupSize, (g + 1) * groupSize)))).toBeLessThan(1e-5);
      }
    }
  });
});

describe("reinforce_baseline (REINFORCE++)", () => {
  test("hand case: the baseline is the mean over the whole batch, not per group", () => {
    // batch mean 0.75
    close(groupAdvantages([1, 0, 1, 1], 2, "reinforce_baseline"), [0.25, -0.75, 0.25, 0.25]);
    // whitened: Bessel std of [.25,-.75,.25,.25] is 0.5
    close(groupAdvantages([1, 0, 1, 1], 2, "reinforce_baseline", { whiten: true }), [0.25 / 0.500001, -0.75 / 0.500001, 0.25 / 0.500001, 0.25 / 0.500001]);
  });

  test("random batches: independent of the group size; whitened batch has mean 0, std ~1", () => {
    const random = mulberry32(13);
    for (let trial = 0; trial < 50; trial++) {
      const rewards = randomRewards(random, 24);
      const byFours = groupAdvantages(rewards, 4, "reinforce_baseline");
      expect(Array.from(groupAdvantages(rewards, 8, "reinforce_baseline"))).toEqual(Array.from(byFours));
      const m = sum(rewards) / rewards.length;
      rewards.forEach((r, i) => expect(byFours[i]).toBeCloseTo(r - m, 5));
      const white = groupAdvantages(rewards, 4, "reinforce_baseline", { whiten: true });
      const wm = sum(white) / white.length;
      expect(Math.abs(wm)).toBeLessThan(1e-5);
      const spread = Math.sqrt(Array.from(white).reduce((acc, x) => acc + (x - wm) ** 2, 0) / (white.length - 1));
      if (new Set(rewards).size > 1) expect(spread).toBeCloseTo(1, 3);
    }
  });
});

describe("argument checks", () => {
  test("bad group sizes, non-finite rewards and unknown estimators are errors that say what is wrong", () => {
    expect(() => groupAdvantages([1, 2, 3], 2, "grpo")).toThrow(/3 rewards do not split into groups of 2/);
    expect(() => groupAdvantages([1, 2], 0, "rloo")).toThrow(/groupSize 0/);
    expect(() => groupAdvantages([1, NaN], 2, "grpo")).toThrow(/reward 1 is NaN/);
    expect(() => groupAdvantages([1, 2], 2, "ppo" as never)).toThrow(/"ppo" is not one of/);
    expect(() => dynamicSamplingKeep([1, 2, 3], 2)).toThrow(/do not split/);
    expect(groupAdvantages([], 4, "grpo").length).toBe(0);
  });
});

describe("dynamic sampling (DAPO)", () => {
  test("drops exactly the groups whose rewards are all equal", () => {
    expect(dynamicSamplingKeep([1, 1, 1, 0, 1, 0, 0, 0, 0, 0.5, 0.5, 0.5000001], 3)).toEqual([false, true, false, true]);
    expect(dynamicSamplingKeep([1, 0, 2], 1)).toEqual([false, false, false]);
  });

  test("random groups: kept ⇔ max ≠ min, and dropped groups are exactly those with all-zero grpo/rloo advantages", () => {
    const random = mulberry32(14);
    for (let trial = 0; trial < 100; trial++) {
      const groupSize = 1 + Math.floor(random() * 6);
      const rewards = Array.from({ length: groupSize * 6 }, () => Math.floor(random() * 2) * 0.5);
      const keep = dynamicSamplingKeep(rewards, groupSize);
      expect(keep.length).toBe(6);
      const grpo = groupAdvantages(rewards, groupSize, "grpo");
      const rloo = groupAdvantages(rewards, groupSize, "rloo");
      keep.forEach((kept, g) => {
        const r = rewards.slice(g * groupSize, (g + 1) * groupSize);
        expect(kept).toBe(Math.max(...r) !== Math.min(...r));
        const allZero = (a: Float32Array) => a.subarray(g * groupSize, (g + 1) * groupSize).every((x) => x === 0);
        expect(allZero(grpo)).toBe(!kept);
        expect(allZero(rloo)).toBe(!kept);
      });
    }
  });
});

describe("overlong penalty (DAPO soft punishment)", () => {
  test("0 up to L_max − L_cache, linear to −1 at L_max, −1 beyond", () => {
    const values = [0, 10, 16, 17, 18, 19, 20, 21, 1000].map((len) => overlongPenalty(len, 20, 4));
    expect(values).toEqual([0, 0, 0, -0.25, -0.5, -0.75, -1, -1, -1]);
  });

  test("cache 0 is a hard step at L_max; cache = L_max starts at length 0", () => {
    expect([19, 20, 21].map((len) => overlongPenalty(len, 20, 0))).toEqual([0, 0, -1]);
    expect([0, 5, 10].map((len) => overlongPenalty(len, 10, 10))).toEqual([0, -0.5, -1]);
  });

  test("monotone non-increasing, within [−1, 0], and continuous up to L_max", () => {
    for (const [maxLength, cache] of [[512, 128], [100, 7], [64, 64]]) {
      let previous = 0;
      for (let len = 0; len <= maxLength + 5; len++) {
        const p = overlongPenalty(len, maxLength, cache);
        expect(p).toBeLessThanOrEqual(previous);
        expect(p).toBeGreaterThanOrEqual(-1);
        if (len <= maxLength) expect(previous - p).toBeLessThanOrEqual(1 / cache + 1e-12);
        previous = p;
      }
    }
  });

  test("a cache longer than the max length is an error", () => {
    expect(() => overlongPenalty(5, 10, 11)).toThrow(/cacheLength 11/);
    expect(() => overlongPenalty(5, 10, -1)).toThrow(/cacheLength -1/);
  });
});
