// The fused policy loss and the chunked token log-probs against their unfused eager forms
// (plain autograd ops on full logits): values and gradients within 1e-5 in fp32 (docs/methods.md §4).
import { Model } from "../lib/engine/model";
import { ops } from "../lib/engine/ops";
import { native, type LossOptions } from "../lib/native";
import { maxAbsDiff, mulberry32 } from "./helpers/random";
import { TINY_SPECS } from "./helpers/tiny-models";

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

/** 37 tokens of hidden size 24 against a vocabulary of 61, with upstream gradients (fresh draws of `rand` per call). */
function logprobInputs() {
  const tokens = 37, hiddenSize = 24, vocabSize = 61;
  const hidden = Float32Array.from({ length: tokens * hiddenSize }, () => uniform(-1, 1));
  const weight = Float32Array.from({ length: vocabSize * hiddenSize }, () => uniform(-0.5, 0.5));
  const targets = Int32Array.from({ length: tokens }, () => Math.floor(rand() * vocabSize));
  const gradLogprobs = Float32Array.from({ length: tokens }, () => uniform(-1, 1));
  const gradEntropy = Float32Array.from({ length: tokens }, () => uniform(-1, 1));
  return { tokens, hiddenSize, vocabSize, hidden, weight, targets, gradLogprobs, gradEntropy };
}

describe("chunked token log-probs equal log_softmax of full logits", () => {
  const { tokens, hiddenSize, vocabSize, hidden, weight, targets, gradLogprobs, gradEntropy } = logprobInputs();

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

describe("the fused log-prob op's memory plans", () => {
  const { tokens, hiddenSize, vocabSize, hidden, weight, targets, gradLogprobs, gradEntropy } = logprobInputs();
  const base = { hidden, weight, targets, tokens, hiddenSize, vocabSize, gradLogprobs };
  // A budget of 1 byte fits nothing (the logits are recomputed); 1 GiB fits everything (log p is kept).
  const PLANS = {
    projected: { lmHeadGrad: false },
    kept: { memoryBudgetBytes: 2 ** 30 },
    recomputed: { memoryBudgetBytes: 1 },
  } as const;

  const cases: [keyof typeof PLANS, number, number, boolean][] = [];
  for (const plan of Object.keys(PLANS) as (keyof typeof PLANS)[])
    for (const [chunkSize, temperature, withEntropy] of [[0, 1.0, false], [7, 0.7, true], [16, 1.3, true]] as const) cases.push([plan, chunkSize, temperature, withEntropy]);

  test.each(cases)("%s, chunk %i, temperature %f, entropy %s: equals the eager formula", async (plan, chunkSize, temperature, withEntropy) => {
    const args = { ...base, ...PLANS[plan], temperature, withEntropy, gradEntropy: withEntropy ? gradEntropy : undefined };
    const fused = await ops.tokenLogprobs({ ...args, chunkSize });
    const eager = await ops.tokenLogprobs({ ...args, eager: true });
    expect(fused.plan!.backward).toBe(plan);
    if (chunkSize > 0) expect(fused.plan!.chunkTokens).toBe(chunkSize);
    expect(maxAbsDiff(fused.logprobs, eager.logprobs)).toBeLessThanOrEqual(TOLERANCE);
    if (withEntropy) expect(maxAbsDiff(fused.entropy!, eager.entropy!)).toBeLessThanOrEqual(TOLERANCE);
    expect(maxAbsDiff(fused.gradHidden!, eager.gradHidden!)).toBeLessThanOrEqual(TOLERANCE);
    if (plan === "projected") {
      expect(fused.gradWeight).toBeUndefined();
      expect(eager.gradWeight).toBeUndefined();
    } else {
      expect(maxAbsDiff(fused.gradWeight!, eager.gradWeight!)).toBeLessThanOrEqual(TOLERANCE);
    }
  });

  test("without upstream gradients nothing is kept for a backward", async () => {
    const result = await ops.tokenLogprobs({ hidden, weight, targets, tokens, hiddenSize, vocabSize, withEntropy: true });
    expect(result.plan!.backward).toBe("none");
    expect(result.gradHidden).toBeUndefined();
  });

  test.each(Object.keys(PLANS) as (keyof typeof PLANS)[])("%s: gradients land in the caller's buffers, the same bits as in new arrays", async (plan) => {
    const args = { ...base, ...PLANS[plan], withEntropy: true, gradEntropy, chunkSize: 7 };
    const fresh = await ops.tokenLogprobs(args);
    for (const eager of [false, true]) {
      const gradHiddenOut = new Float32Array(tokens * hiddenSize).fill(NaN);
      const gradWeightOut = new Float32Array(vocabSize * hiddenSize).fill(NaN);
      const into = await ops.tokenLogprobs({ ...args, eager, gradHiddenOut, gradWeightOut });
      const reference = eager ? await ops.tokenLogprobs({ ...args, eager }) : fresh;
      expect(into.gradHidden).toBe(gradHiddenOut);
      expect(Array.from(gradHiddenOut)).toEqual(Array.from(reference.gradHidden!));
      if (plan === "projected") {
        expect(into.gradWeight).toBeUndefined();
        expect(gradWeightOut.every((x) => Number.isNaN(x))).toBe(true); // a frozen head's buffer is left alone
      } else {
        expect(into.gradWeight).toBe(gradWeightOut);
        expect(Array.from(gradWeightOut)).toEqual(Array.from(reference.gradWeight!));
      }
    }
  });

  test("with a Float32Array weight and gradWeightOut, no [vocab x hidden] tensor is allocated", async () => {
    const n = 16, C = 256, V = 4096;
    const args = {
      hidden: Float32Array.from({ length: n * C }, () => uniform(-1, 1)),
      weight: Float32Array.from({ length: V * C }, () => uniform(-0.1, 0.1)),
      targets: Int32Array.from({ length: n }, () => Math.floor(rand() * V)),
      tokens: n, hiddenSize: C, vocabSize: V,
      gradLogprobs: Float32Array.from({ length: n }, () => uniform(-1, 1)),
    };
    const weightBytes = V * C * 4;
    const peakOf = async (call: () => Promise<unknown>) => {
      const before = native().ops.deviceMemory("cpu", { resetPeak: true }).currentBytes;
      await call();
      return native().ops.deviceMemory("cpu").peakBytes - before;
    };
    const gradWeightOut = new Float32Array(V * C);
    expect(await peakOf(() => ops.tokenLogprobs({ ...args, gradWeightOut }))).toBeLessThan(weightBytes);
    // Without the buffer, the gradient is made in the engine (and copied out): the contrast.
    expect(await peakOf(() => ops.tokenLogprobs(args))).toBeGreaterThanOrEqual(weightBytes);
  });

  test("gradient buffers that overlap an input, or have the wrong size, are refused", async () => {
    const gradHiddenOut = hidden.subarray(0, tokens * hiddenSize);
    await expect(ops.tokenLogprobs({ ...base, gradHiddenOut })).rejects.toThrow(/must not share memory/);
    await expect(ops.tokenLogprobs({ ...base, gradWeightOut: new Float32Array(3) })).rejects.toThrow(/gradWeightOut has 3 elements/);
    await expect(ops.tokenLogprobs({ ...base, chunkSize: -1 })).rejects.toThrow(/chunkSize must be a whole number >= 0/);
  });

  test("a model's own LM head serves as the weight", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 3, { device: "cpu" });
    try {
      const C = TINY_SPECS.qwen3.hiddenSize, V = TINY_SPECS.qwen3.vocabSize, n = 20;
      const h = Float32Array.from({ length: n * C }, () => uniform(-1, 1));
      const t = Int32Array.from({ length: n }, () => Math.floor(rand() * V));
      const args = { hidden: h, weight: model, targets: t, tokens: n, hiddenSize: C, vocabSize: V, gradLogprobs: gradLogprobs.subarray(0, n) };
      const fused = await ops.tokenLogprobs(args);
      const eager = await ops.tokenLogprobs({ ...args, eager: true });
      expect(maxAbsDiff(fused.logprobs, eager.logprobs)).toBeLessThanOrEqual(TOLERANCE);
      expect(maxAbsDiff(fused.gradHidden!, eager.gradHidden!)).toBeLessThanOrEqual(TOLERANCE);
      expect(maxAbsDiff(fused.gradWeight!, eager.gradWeight!)).toBeLessThanOrEqual(TOLERANCE);
      await expect(ops.tokenLogprobs({ ...args, vocabSize: V + 1 })).rejects.toThrow(/the model's LM head is \[96, 64\]/);
    } finally {
      model.dispose();
    }
  });

  // Peak bytes from the counting allocator: the same on every CPU, so the shares are asserted.
  test.each([
    [2048, 64, 4096, false, "projected", 0.25],
    [2048, 64, 4096, true, "kept", 0.5],
    // The LM head's gradient alone outgrows half of eager: log p is not kept beside it.
    [128, 256, 8192, true, "recomputed", null],
  ] as const)("%i tokens, hidden %i, vocab %i, LM head grad %s: plan %s, and its share of eager's peak", async (tokens, hiddenSize, vocabSize, lmHeadGrad, backward, share) => {
    const shape = { tokens, hiddenSize, vocabSize, chunkSize: 0, iterations: 1, device: "cpu", lmHeadGrad };
    const fused = await native().ops.benchPolicyLoss({ ...shape, eager: false });
    const eager = await native().ops.benchPolicyLoss({ ...shape, eager: true });
    expect(fused.plan!.backward).toBe(backward);
    expect(fused.peakBytes).toBeLessThanOrEqual(fused.plan!.workingBytes);
    if (share !== null) {
      expect(fused.plan!.workingBytes).toBeLessThanOrEqual(fused.plan!.budgetBytes);
      expect(fused.peakBytes).toBeLessThanOrEqual(share * eager.peakBytes);
    }
    expect(fused.peakBytes).toBeLessThan(eager.peakBytes);
    expect(Math.abs(fused.loss - eager.loss)).toBeLessThanOrEqual(1e-5);
  });
});
