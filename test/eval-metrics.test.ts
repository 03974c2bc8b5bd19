// Evaluation metrics against references we did not derive from the formulas under test:
// pass@k by enumerating every k-subset and by exact BigInt binomials; maj@k, mean@k and the
// self-correction transitions on crafted cases.
import { defaultKs, evaluationMetrics, majAtK, meanAtK, passAtK, type GradedAnswer } from "../lib/eval/metrics";
import { closeVerifier } from "../lib/grading/verify";
import { mulberry32 } from "./helpers/random";

afterAll(() => closeVerifier());

/** Fraction of the k-subsets of n samples (the first c correct) holding at least one correct sample. */
function passAtKByEnumeration(n: number, c: number, k: number): number {
  let hit = 0, total = 0;
  const choose = (start: number, left: number, anyCorrect: boolean): void => {
    if (left === 0) {
      total++;
      if (anyCorrect) hit++;
      return;
    }
    for (let i = start; i <= n - left; i++) choose(i + 1, left - 1, anyCorrect || i < c);
  };
  choose(0, k, false);
  return hit / total;
}

function binomial(n: number, k: number): bigint {
  if (k < 0 || k > n) return 0n;
  let r = 1n;
  for (let i = 1; i <= k; i++) r = (r * BigInt(n - k + i)) / BigInt(i);
  return r;
}

describe("pass@k", () => {
  test("equals brute-force enumeration over all k-subsets (300 random cases, n <= 12)", () => {
    const random = mulberry32(2024);
    for (let t = 0; t < 300; t++) {
      const n = 1 + Math.floor(random() * 12);
      const c = Math.floor(random() * (n + 1));
      const k = 1 + Math.floor(random() * n);
      expect(passAtK(n, c, k)).toBeCloseTo(passAtKByEnumeration(n, c, k), 12);
    }
    // every (c, k) of n = 8, edges included
    for (let c = 0; c <= 8; c++) for (let k = 1; k <= 8; k++) expect(passAtK(8, c, k)).toBeCloseTo(passAtKByEnumeration(8, c, k), 12);
  });

  test("stays exact where the binomials overflow doubles (n up to 1200), against BigInt arithmetic", () => {
    expect(Number(binomial(1100, 550))).toBe(Infinity); // where a factorial/binomial form breaks down
    const random = mulberry32(7);
    for (let t = 0; t < 100; t++) {
      const n = 200 + Math.floor(random() * 1000);
      const c = Math.floor(random() * 20);
      const k = 1 + Math.floor(random() * n);
      const scale = 10n ** 30n;
      const exact = 1 - Number((binomial(n - c, k) * scale) / binomial(n, k)) / 1e30;
      expect(passAtK(n, c, k)).toBeCloseTo(exact, 12);
    }
  });

  test("k = 1 is the fraction correct; no correct sample gives 0; bad arguments are errors", () => {
    expect(passAtK(10, 3, 1)).toBeCloseTo(0.3, 15);
    expect(passAtK(10, 0, 10)).toBe(0);
    expect(passAtK(10, 10, 1)).toBe(1);
    expect(() => passAtK(4, 5, 1)).toThrow(/0 <= c <= n/);
    expect(() => passAtK(4, 1, 5)).toThrow(/1 <= k <= n/);
  });

  test("default k values: powers of two up to n, and n", () => {
    expect(defaultKs(1)).toEqual([1]);
    expect(defaultKs(8)).toEqual([1, 2, 4, 8]);
    expect(defaultKs(6)).toEqual([1, 2, 4, 6]);
  });
});

const wrong = (answer?: string): GradedAnswer => ({ answer, correct: false });
const right = (answer: string): GradedAnswer => ({ answer, correct: true });

describe("maj@k", () => {
  test("answers the verifier calls equal vote together (1/2 = 0.5 = \\frac{1}{2})", () => {
    const attempts = [wrong("3"), right("\\frac{1}{2}"), wrong("3"), right("0.5"), right("1/2")];
    expect(majAtK(attempts, 5)).toBe(1);
    // among the first 3, "3" has two votes
    expect(majAtK(attempts, 3)).toBe(0);
  });

  test("ties go to the smallest answer whatever the sample order; samples without an answer do not vote", () => {
    expect(majAtK([right("7"), wrong("8"), wrong("8"), right("7")], 4)).toBe(1);
    expect(majAtK([wrong("8"), right("7"), right("7"), wrong("8")], 4)).toBe(1);
    expect(majAtK([right("8"), wrong("7"), wrong("7"), right("8")], 4)).toBe(0);
    expect(majAtK([wrong(undefined), wrong(undefined), right("7")], 3)).toBe(1);
    expect(majAtK([wrong(undefined), wrong(undefined)], 2)).toBe(0);
  });

  test("the equivalence is injectable (exact string match here)", () => {
    const attempts = [right("0.5"), wrong("1/2"), wrong("1/2")];
    expect(majAtK(attempts, 3, (a, b) => a === b)).toBe(0);
    expect(majAtK(attempts, 3)).toBe(1);
  });
});

test("mean@k is the fraction correct among the first k", () => {
  const attempts = [right("1"), wrong("2"), right("1"), right("1")];
  expect(meanAtK(attempts, 1)).toBe(1);
  expect(meanAtK(attempts, 2)).toBe(0.5);
  expect(meanAtK(attempts, 4)).toBe(0.75);
  expect(() => meanAtK(attempts, 5)).toThrow(/k must be an integer in \[1, 4\]/);
});

describe("evaluationMetrics", () => {
  // 2 problems × 2 samples × 3 rounds; r(x) = right, w(x) = wrong
  const graded: GradedAnswer[][][] = [
    [
      [wrong("1"), right("2"), right("2")], // i→c, then stays
      [right("2"), wrong("5"), right("2")], // c→i, then back
    ],
    [
      [wrong("4"), wrong("4"), wrong("6")], // stays wrong
      [right("3"), right("3"), wrong("9")], // c→c, then c→i
    ],
  ];
  const m = evaluationMetrics(graded, [[true, true], [false, true]], [1, 2], (a, b) => a === b);

  test("accuracy by round, transitions t1→t2, t2→t3 and t1→t3 as fractions of all samples", () => {
    expect(m.accuracy).toEqual([0.5, 0.5, 0.5]);
    expect([m.accT1, m.accT2, m.count, m.problems, m.samplesPerProblem, m.rounds]).toEqual([0.5, 0.5, 4, 2, 2, 3]);
    expect(m.transitions).toEqual([
      { from: 1, to: 2, delta: 0, incorrectToCorrect: 0.25, correctToIncorrect: 0.25 },
      { from: 2, to: 3, delta: 0, incorrectToCorrect: 0.25, correctToIncorrect: 0.25 },
      { from: 1, to: 3, delta: 0, incorrectToCorrect: 0.25, correctToIncorrect: 0.25 },
    ]);
    expect([m.delta, m.deltaIncorrectToCorrect, m.deltaCorrectToIncorrect, m.markerRate]).toEqual([0, 0.25, 0.25, 0.75]);
  });

  test("pass@k, maj@k and mean@k per round", () => {
    // round 1: each problem has 1 of 2 right, its first sample wrong
    expect(m.byRound[0].passAtK).toEqual({ 1: 0.5, 2: 1 });
    expect(m.byRound[0].meanAtK).toEqual({ 1: 0, 2: 0.5 });
    // maj@2 round 1: ties go to the smallest answer: problem 0 → "1" (wrong), problem 1 → "3" (right)
    expect(m.byRound[0].majAtK).toEqual({ 1: 0, 2: 0.5 });
    // round 3: problem 0 both "2" (right); problem 1 "6", "9" → "6" (wrong)
    expect(m.byRound[2].majAtK).toEqual({ 1: 0.5, 2: 0.5 });
    expect(m.byRound[2].passAtK).toEqual({ 1: 0.5, 2: 0.5 });
  });

  test("ragged input, one round, and k above n are errors", () => {
    expect(() => evaluationMetrics([[[right("1"), right("1")]], [[right("1")]]], [[false], [false]], [1])).toThrow(/without 2 rounds/);
    expect(() => evaluationMetrics([[[right("1")]]], [[false]], [1])).toThrow(/at least 2 rounds/);
    expect(() => evaluationMetrics(graded, [[true, true], [false, true]], [3])).toThrow(/k must be an integer in \[1, 2\]/);
  });
});
