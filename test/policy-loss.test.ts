// The fused policy loss and the chunked token log-probs against their unfused eager forms
// (plain autograd ops on full logits): values and gradients within 1e-5 in fp32 (docs/methods.md §4).
import { ops } from "../lib/engine/ops";
import type { LossOptions } from "../lib/native";
import { maxAbsDiff, mulberry32 } from "./helpers/random";

const TOLERANCE = 1e-5;
const N = 48;
const SEQUENCES = 5;
const rand = mulberry32(2024);
const uniform = (lo: number, hi: number) => lo + (hi - lo) * rand();

const sequenceIds = Int32Array.from({ length: N }, (_, i) => Math.min(SEQUENCES - 1, Math.floor(i / 10)));
const logprobs = Float32Array.from({ length: N }, () => uniform(-4, -0.05));
// Wide log-ratios so that both clip bounds, the dual clip and the ±20 clamp are all hit.
const oldLogprobs = logprobs.map((lp, i) => (i === 3 ? lp - 25 : i === 4 ? lp + 25 : lp + uniform(-0.6, 0.6)));
const refLogprobs = logprobs.map((lp, i) => (i === 5 ? lp + 12 : lp + uniform(-0.8, 0.8)));
// Token 3 has r = e^20 (clamped): a positive advantage keeps its loss on the clipped branch,
// as a huge -rA would swamp fp32 sums (the unclipped branch at r = e^20 is no realistic case).
const advantages = Float32Array.from({ length: N }, (_, i) => (i === 3 ? 1.5 : i % 7 === 0 ? 0 : uniform(-2, 2)));
const entropy = Float32Array.from({ length: N }, () => uniform(0.1, 3));
const bernoulli = (p: number) => Float32Array.from({ length: N }, () => (rand() < p ? 1 : 0));
const mixedLoss = bernoulli(0.7);

const MASK_PATTERNS: Record<string, { lossMask: Float32Array; klMask: Float32Array }> = {
  "mixed masks": { lossMask: mixedLoss, klMask: bernoulli(0.5) },
  "all tokens": { lossMask: new Float32Array(N).fill(1), klMask: new Float32Array(N).fill(1) },
  "KL-only tokens (disjoint masks)": { lossMask: mixedLoss, klMask: mixedLoss.map((m) => 1 - m) },
  "empty loss mask": { lossMask: new Float32Array(N), klMask: bernoulli(0.6) },
  "empty masks": { lossMask: new Float32Array(N), klMask: new Float32Array(N) },
};

const normalizers = { lossTokens: 61, klTokens: 47, sequences: 7, maxLength: 24 };

describe("fused policy loss equals the eager formula (value and gradients)", () => {
  const cases: [string, LossOptions["ratioLevel"], LossOptions["klEstimator"], LossOptions["aggregation"], string][] = [];
  for (const ratioLevel of ["token", "sequence"] as const)
    for (const klEstimator of ["k1", "k2", "k3"] as const)
      for (const aggregation of ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] as const)
        for (const pattern of Object.keys(MASK_PATTERNS)) cases.push([`${ratioLevel} ratio, ${klEstimator}, ${aggregation}, ${pattern}`, ratioLevel, klEstimator, aggregation, pattern]);

  test.each(cases)("%s", async (_name, ratioLevel, klEstimator, aggregation, pattern) => {
    const { lossMask, klMask } = MASK_PATTERNS[pattern];
    // GSPO's sequence ratios sit near 1: its own tight clip range makes the clip bite.
    const clip = ratioLevel === "sequence" ? { clipLow: 3e-4, clipHigh: 4e-4 } : { clipLow: 0.2, clipHigh: 0.28 };
    for (const dualClip of [0, 3]) {
      const options: LossOptions = { ratioLevel, klEstimator, aggregation, klCoef: 0.05, entropyCoef: 0.01, dualClip, ...clip };
      const args = { logprobs, oldLogprobs, refLogprobs, advantages, lossMask, klMask, sequenceIds, numSequences: SEQUENCES, entropy, options, normalizers };
      const fused = await ops.policyLoss(args);
      const eager = await ops.policyLoss({ ...args, eager: true });
      // Values relative to their size (the clamped k3 token makes the loss ~100: fp32 sums differ in the last bits).
      const scale = Math.max(1, Math.abs(eager.loss));
      expect(Math.abs(fused.loss - eager.loss)).toBeLessThanOrEqual(TOLERANCE * scale);
      expect(maxAbsDiff(fused.gradLogprobs, eager.gradLogprobs)).toBeLessThanOrEqual(TOLERANCE);
      expect(maxAbsDiff(fused.gradEntropy!, eager.gradEntropy!)).toBeLessThanOrEqual(TOLERANCE);
      const stats = fused.stats!;
      expect(stats.lossTokens).toBe(lossMask.reduce((a, b) => a + b, 0));
      expect(stats.klTokens).toBe(klMask.reduce((a, b) => a + b, 0));
      expect(Math.abs(stats.policyLoss + stats.klLoss + stats.entropyLoss - fused.loss)).toBeLessThan(1e-6 * scale);
      if (pattern === "empty masks") {
        expect(fused.loss).toBe(0);
        expect(fused.gradLogprobs.every((g) => Math.abs(g) === 0)).toBe(true);
      }
      if (pattern === "all tokens") {
        // Both branches of the clipped surrogate are exercised, not only one.
        expect(stats.clippedTokens).toBeGreaterThan(0);
        expect(stats.clippedTokens).toBeLessThan(N);
      }
      if (pattern === "empty loss mask") {
        // Only the KL term trains: no policy gradient reaches a token outside m_kl.
        klMask.forEach((m, t) => m === 0 && expect(Math.abs(fused.gradLogprobs[t])).toBe(0));
      }
    }
  });

  test("the dual clip changes the loss of negative-advantage tokens and is counted", async () => {
    const { lossMask, klMask } = MASK_PATTERNS["all tokens"];
    const base = { logprobs, oldLogprobs, refLogprobs, advantages, lossMask, klMask, sequenceIds, numSequences: SEQUENCES, normalizers };
    const plain = await ops.policyLoss({ ...base, options: { dualClip: 0 } });
    const dual = await ops.policyLoss({ ...base, options: { dualClip: 1.5 } });
    expect(dual.stats!.dualClippedTokens).toBeGreaterThan(0);
    expect(dual.loss).toBeLessThan(plain.loss);
  });
});

describe("chunked token log-probs equal log_softmax of full logits", () => {
  const tokens = 37, hiddenSize = 24, vocabSize = 61;
  const hidden = Float32Array.from({ length: tokens * hiddenSize }, () => uniform(-1, 1));
  const weight = Float32Array.from({ length: vocabSize * hiddenSize }, () => uniform(-0.5, 0.5));
  const targets = Int32Array.from({ length: tokens }, () => Math.floor(rand() * vocabSize));
  const gradLogprobs = Float32Array.from({ length: tokens }, () => uniform(-1, 1));
  const gradEntropy = Float32Array.from({ length: tokens }, () => uniform(-1, 1));

  test.each([
    [1, 1.0, true],
    [7, 1.0, true],
    [7, 0.7, true],
    [16, 1.3, false],
    [64, 1.0, true], // one chunk larger than the input
  ])("chunk %i, temperature %f, entropy %s", async (chunkSize, temperature, withEntropy) => {
    const args = { hidden, weight, targets, tokens, hiddenSize, vocabSize, temperature, withEntropy, gradLogprobs, gradEntropy: withEntropy ? gradEntropy : undefined };
    const fused = await ops.tokenLogprobs({ ...args, chunkSize });
    const eager = await ops.tokenLogprobs({ ...args, eager: true });
    expect(maxAbsDiff(fused.logprobs, eager.logprobs)).toBeLessThanOrEqual(TOLERANCE);
    if (withEntropy) expect(maxAbsDiff(fused.entropy!, eager.entropy!)).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(fused.gradHidden!, eager.gradHidden!)).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(fused.gradWeight!, eager.gradWeight!)).toBeLessThanOrEqual(TOLERANCE);
    expect(fused.logprobs.every((x) => x <= 0)).toBe(true);
  });

  test("a target outside the vocabulary is an error, not a crash", async () => {
    await expect(ops.tokenLogprobs({ hidden, weight, targets: targets.map((t, i) => (i === 2 ? vocabSize : t)), tokens, hiddenSize, vocabSize })).rejects.toThrow(/outside the vocabulary/);
  });
});
