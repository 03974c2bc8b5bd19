// Training step behaviour: AdamW vs libtorch's, LR schedule, exact micro-batching,
// activation checkpointing, non-finite steps, and a supervised run that learns.
import { learningRate } from "../lib/engine/lr-schedule";
import { Model } from "../lib/engine/model";
import { ops } from "../lib/engine/ops";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import type { LossOptions } from "../lib/native";
import { maxAbsDiff, mulberry32 } from "./helpers/random";
import { TINY_SPECS } from "./helpers/tiny-models";

describe("AdamW", () => {
  test("matches libtorch's torch::optim::AdamW over several steps (decay on >= 2-D weights only)", async () => {
    const rand = mulberry32(9);
    const shapes = [[6, 5], [5], [3, 4, 2]];
    const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const params = shapes.map((s) => Float32Array.from({ length: numel(s) }, () => rand() - 0.5));
    const lrs = [1e-3, 5e-3, 2e-3, 1e-2, 3e-3];
    const grads = lrs.map(() => shapes.map((s) => Float32Array.from({ length: numel(s) }, () => (rand() - 0.5) * 2)));
    const options = { params, shapes, grads, lrs, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const ours = await ops.adamw(options);
    const reference = await ops.adamw({ ...options, reference: true });
    ours.forEach((p, i) => expect(maxAbsDiff(p, reference[i])).toBeLessThan(1e-6));
    // The update did something, and the 1-D weight saw no decay: both are needed for the check to mean anything.
    expect(maxAbsDiff(ours[0], params[0])).toBeGreaterThan(1e-3);
    const noDecay = await ops.adamw({ ...options, weightDecay: 0 });
    expect(maxAbsDiff(noDecay[1], ours[1])).toBe(0);
    expect(maxAbsDiff(noDecay[0], ours[0])).toBeGreaterThan(0);
  });
});

describe("learning-rate schedule", () => {
  test("linear warm-up, then constant", () => {
    const s = { lr: 1e-6, warmupSteps: 10, kind: "constant" as const };
    expect(learningRate(s, 0)).toBeCloseTo(1e-7, 15);
    expect(learningRate(s, 4)).toBeCloseTo(5e-7, 15);
    expect(learningRate(s, 9)).toBeCloseTo(1e-6, 15);
    expect(learningRate(s, 500)).toBe(1e-6);
  });

  test("cosine from the end of warm-up to the floor at totalSteps", () => {
    const s = { lr: 1e-3, warmupSteps: 2, kind: "cosine" as const, totalSteps: 12, minLrRatio: 0.1 };
    expect(learningRate(s, 1)).toBeCloseTo(1e-3, 12);
    expect(learningRate(s, 2)).toBeCloseTo(1e-3, 12);
    expect(learningRate(s, 7)).toBeCloseTo(1e-4 + 0.9e-3 * 0.5, 12); // halfway: cos = 0
    expect(learningRate(s, 12)).toBeCloseTo(1e-4, 12);
    expect(learningRate(s, 50)).toBeCloseTo(1e-4, 12);
    expect(() => learningRate({ ...s, totalSteps: undefined }, 5)).toThrow(/totalSteps/);
  });
});

/** Ragged sequences with prompt tokens masked out, as RL produces them. */
function makeSequences(seed: number, count: number, vocab: number): TrainSequence[] {
  const rand = mulberry32(seed);
  return Array.from({ length: count }, (_, i) => {
    const promptLength = 3 + (i % 3);
    const length = promptLength + 4 + ((i * 5) % 7);
    const tokens = Int32Array.from({ length }, () => Math.floor(rand() * vocab));
    const lossMask = Uint8Array.from({ length }, (_, t) => (t >= promptLength ? 1 : 0));
    // KL on part of the prompt-free tokens only, and on some tokens without policy loss.
    const klMask = Uint8Array.from({ length }, (_, t) => (t >= 1 && (t < promptLength || t % 2 === 0) ? 1 : 0));
    return { tokens, lossMask, klMask, advantage: rand() * 2 - 1 };
  });
}

async function withLogprobs(model: Model, reference: Model, sequences: TrainSequence[]): Promise<TrainSequence[]> {
  const tokens = sequences.map((s) => s.tokens);
  // Old log-probs slightly off the current policy so ratios differ from 1 and clipping happens.
  const old = (await PolicyTrainer.logprobs(model, tokens)).map((lp, i) => lp.map((x, t) => x + 0.3 * Math.sin(i + t)));
  const ref = await PolicyTrainer.logprobs(reference, tokens);
  return sequences.map((s, i) => ({ ...s, oldLogprobs: old[i], refLogprobs: ref[i] }));
}

const probe = Int32Array.from({ length: 2 * 10 }, (_, i) => (i * 13 + 1) % 96);

describe("a training step", () => {
  const spec = TINY_SPECS.qwen3;
  const loss: LossOptions = { ratioLevel: "sequence" as const, clipLow: 0.2, clipHigh: 0.28, klCoef: 0.1, klEstimator: "k3" as const, aggregation: "seq-mean-token-mean" as const, entropyCoef: 0.01 };

  async function stepWith(options: { microBatchSize: number; activationCheckpointing?: boolean }, lossOptions: LossOptions = loss): Promise<Float32Array> {
    const model = await Model.create(spec, 21, { device: "cpu" });
    const reference = await Model.create(spec, 22, { device: "cpu" });
    const sequences = await withLogprobs(model, reference, makeSequences(5, 6, spec.vocabSize));
    // eps = 1 keeps Adam's first update linear in the gradient (lr·g/(|g|+1)); with a small eps
    // it is lr·sign(g), which turns rounding-level gradient differences into full-size steps.
    const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" }, weightDecay: 0.1, maxGradNorm: 0.5, eps: 1, ...options });
    const report = await trainer.trainStep(sequences, { objective: "policy", loss: lossOptions });
    expect(report.skipped).toBe(false);
    expect(report.clipFraction).toBeGreaterThanOrEqual(0);
    const logits = await model.forward(probe, 2, 10);
    model.dispose();
    reference.dispose();
    return logits;
  }

  test("k micro-batches give the same update as one batch", async () => {
    const whole = await stepWith({ microBatchSize: 6 });
    for (const size of [1, 2, 4]) expect(maxAbsDiff(await stepWith({ microBatchSize: size }), whole)).toBeLessThan(1e-6);
  });

  test("the same holds for token-mean GRPO with k1 and for Dr.GRPO's sequence-sum-norm", async () => {
    for (const variant of [
      { ...loss, ratioLevel: "token" as const, aggregation: "token-mean" as const, klEstimator: "k1" as const },
      { ...loss, ratioLevel: "token" as const, aggregation: "seq-mean-token-sum-norm" as const, dualClip: 3 },
    ]) {
      const whole = await stepWith({ microBatchSize: 6 }, variant);
      expect(maxAbsDiff(await stepWith({ microBatchSize: 2 }, variant), whole)).toBeLessThan(1e-6);
    }
  });

  test("activation checkpointing on and off give the same update", async () => {
    const plain = await stepWith({ microBatchSize: 3 });
    const checkpointed = await stepWith({ microBatchSize: 3, activationCheckpointing: true });
    expect(maxAbsDiff(checkpointed, plain)).toBeLessThan(1e-6);
  });

  test("the step moves the model, and old log-probs equal to the current ones give ratio 1", async () => {
    const model = await Model.create(spec, 21, { device: "cpu" });
    const before = await model.forward(probe, 2, 10);
    const sequences = makeSequences(5, 4, spec.vocabSize);
    const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens));
    const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" } });
    const report = await trainer.trainStep(sequences.map((s, i) => ({ ...s, oldLogprobs: old[i] })), { objective: "policy" });
    expect(Math.abs(report.meanRatio - 1)).toBeLessThan(1e-5);
    expect(report.clipFraction).toBe(0);
    expect(report.gradNorm).toBeGreaterThan(0);
    expect(maxAbsDiff(await model.forward(probe, 2, 10), before)).toBeGreaterThan(1e-4);
    model.dispose();
  });

  test("a non-finite loss skips the step: nothing changes and it is reported", async () => {
    const model = await Model.create(spec, 21, { device: "cpu" });
    const before = await model.forward(probe, 2, 10);
    const sequences = makeSequences(5, 3, spec.vocabSize);
    const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens));
    const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" }, microBatchSize: 1 });
    const poisoned = sequences.map((s, i) => ({ ...s, oldLogprobs: old[i], advantage: i === 2 ? NaN : 1 }));
    const report = await trainer.trainStep(poisoned, { objective: "policy" });
    expect(report.skipped).toBe(true);
    expect(trainer.step).toBe(0);
    expect(maxAbsDiff(await model.forward(probe, 2, 10), before)).toBe(0);
    // The next good step starts from clean gradients and works.
    const good = await trainer.trainStep(poisoned.map((s) => ({ ...s, advantage: 1 })), { objective: "policy" });
    expect(good.skipped).toBe(false);
    expect(trainer.step).toBe(1);
    model.dispose();
  });

  test("bad sequences are rejected with a message naming the sequence", async () => {
    const model = await Model.create(spec, 1, { device: "cpu" });
    const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-3, warmupSteps: 0, kind: "constant" } });
    const [s] = makeSequences(1, 1, spec.vocabSize);
    await expect(trainer.trainStep([s], { objective: "policy" })).rejects.toThrow(/sequence 0: the policy objective needs oldLogprobs/);
    await expect(trainer.trainStep([{ ...s, lossMask: Uint8Array.from(s.lossMask).fill(1) }], { objective: "supervised" })).rejects.toThrow(/token 0 has no prefix/);
    await expect(trainer.trainStep([{ ...s, lossMask: Uint8Array.from(s.lossMask).slice(0, 2) }], { objective: "supervised" })).rejects.toThrow(/lossMask has 2 entries/);
    model.dispose();
  });
});

test("old/reference log-probs equal log_softmax of a full forward at each token", async () => {
  const spec = TINY_SPECS.llama3;
  const model = await Model.create(spec, 4, { device: "cpu" });
  const sequences = [Int32Array.from([5, 9, 2, 77, 31]), Int32Array.from([8, 1, 60])];
  const lps = await PolicyTrainer.logprobs(model, sequences);
  for (const [i, tokens] of sequences.entries()) {
    const logits = await model.forward(tokens, 1, tokens.length);
    expect(lps[i][0]).toBe(0);
    for (let t = 1; t < tokens.length; t++) {
      const row = logits.subarray((t - 1) * spec.vocabSize, t * spec.vocabSize);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      expect(Math.abs(lps[i][t] - (row[tokens[t]] - lse))).toBeLessThan(1e-5);
    }
  }
  model.dispose();
});

test("a few hundred supervised steps on a tiny model drive the loss down", async () => {
  // Task: continue an arithmetic progression of token ids, e.g. 7 10 13 16 ...
  const spec = { ...TINY_SPECS.qwen3, numLayers: 2 };
  const model = await Model.create(spec, 3, { device: "cpu" });
  const trainer = new PolicyTrainer(model, { schedule: { lr: 3e-3, warmupSteps: 10, kind: "cosine", totalSteps: 200, minLrRatio: 0.1 }, weightDecay: 0.0 });
  const rand = mulberry32(77);
  const batch = () =>
    Array.from({ length: 8 }, () => {
      const start = Math.floor(rand() * 20), stride = 1 + Math.floor(rand() * 4);
      const tokens = Int32Array.from({ length: 16 }, (_, t) => (start + stride * t) % spec.vocabSize);
      return { tokens, lossMask: Uint8Array.from({ length: 16 }, (_, t) => (t >= 3 ? 1 : 0)) };
    });
  const losses: number[] = [];
  for (let step = 0; step < 200; step++) losses.push((await trainer.trainStep(batch(), { objective: "supervised" })).loss);
  const first = losses.slice(0, 10).reduce((a, b) => a + b) / 10;
  const last = losses.slice(-10).reduce((a, b) => a + b) / 10;
  // starts near uniform: the first step's loss is the untrained model's (taken before its update)
  expect(losses[0]).toBeGreaterThan(Math.log(spec.vocabSize) - 0.5);
  // A trained outcome with a wide margin: the data are seeded and nothing is sampled, so machines
  // differ only in rounding, and the loss ends ~250x below where it starts (bound: 4x).
  expect(last).toBeLessThan(0.25 * first);
  model.dispose();
});

describe("bf16 models train through fp32 master weights", () => {
  const spec = { ...TINY_SPECS.qwen3, numLayers: 1 };
  const sequences = Array.from({ length: 4 }, (_, i) => ({
    tokens: Int32Array.from({ length: 10 }, (_, k) => (i * 5 + k * 3) % spec.vocabSize),
    lossMask: Uint8Array.from({ length: 10 }, (_, k) => (k >= 2 ? 1 : 0)),
  }));

  test("updates far below bf16 resolution still add up", async () => {
    // Pure weight decay (no loss tokens): each step scales every matrix by 1 - 1e-4, a relative
    // change 20x below bf16's resolution (2^-9). Rounded into bf16 alone, no weight would ever
    // move; accumulated in fp32 masters, 100 steps shrink the weights by 1% and the logits move.
    const model = await Model.create(spec, 8, { device: "cpu", dtype: "bfloat16" });
    expect(model.handle.dtype).toBe("BFloat16");
    const before = await model.forward(probe, 2, 10);
    const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" }, weightDecay: 1e-2, maxGradNorm: 0 });
    const noLoss = sequences.map((s) => ({ ...s, lossMask: new Uint8Array(s.tokens.length) }));
    await trainer.trainStep(noLoss, { objective: "supervised" });
    expect(maxAbsDiff(await model.forward(probe, 2, 10), before)).toBe(0);
    for (let i = 0; i < 99; i++) await trainer.trainStep(noLoss, { objective: "supervised" });
    expect(trainer.step).toBe(100);
    expect(maxAbsDiff(await model.forward(probe, 2, 10), before)).toBeGreaterThan(0);
    model.dispose();
  });

  test("micro-batch gradients add up in fp32: 4 micro-batches of a batch's quarter-loss equal the batch (bit-exact)", async () => {
    // Each copy's loss is the batch's divided by 4 (the step counts 4x the tokens), so its bf16
    // gradients are exactly g/4 (a power of two scales through every op). Summed in fp32 they give
    // g exactly; summed in bf16, g/4 + g/4 + g/4 = 3g/4 needs two more bits than bf16 has and
    // rounds, and the updates would differ.
    const afterStep = async (batch: TrainSequence[], microBatchSize: number) => {
      const model = await Model.create(spec, 8, { device: "cpu", dtype: "bfloat16" });
      const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" }, weightDecay: 0, maxGradNorm: 0, microBatchSize });
      const report = await trainer.trainStep(batch, { objective: "supervised" });
      const logits = await model.forward(probe, 2, 10);
      model.dispose();
      return { gradNorm: report.gradNorm, logits };
    };
    const whole = await afterStep(sequences, sequences.length);
    const quarters = await afterStep([...sequences, ...sequences, ...sequences, ...sequences], sequences.length);
    expect(quarters.gradNorm).toBe(whole.gradNorm);
    expect(maxAbsDiff(quarters.logits, whole.logits)).toBe(0);
  });

  test("float16 training is refused (it needs loss scaling), naming what to use", async () => {
    const model = await Model.create(spec, 8, { device: "cpu", dtype: "float16" });
    expect(() => new PolicyTrainer(model, { schedule: { lr: 1e-3, warmupSteps: 0, kind: "constant" } })).toThrow(/float16.*bfloat16/s);
    model.dispose();
  });

  test("a bf16 model learns a supervised task", async () => {
    const model = await Model.create(spec, 8, { device: "cpu", dtype: "bfloat16" });
    const trainer = new PolicyTrainer(model, { schedule: { lr: 3e-3, warmupSteps: 5, kind: "constant" }, weightDecay: 0 });
    const first = await trainer.trainStep(sequences, { objective: "supervised" });
    let last = first;
    for (let i = 0; i < 40; i++) last = await trainer.trainStep(sequences, { objective: "supervised" });
    // fixed sequences, nothing sampled: the loss ends ~100x below its start (bound: 3x)
    expect(last.loss).toBeLessThan(0.3 * first.loss);
    model.dispose();
  });
});

describe("resuming from a checkpoint", () => {
  test.each(["float32", "bfloat16"])("%s: k steps, save, reload, N-k steps equals N steps straight (bit-exact)", async (dtype) => {
    const fs = await import("node:fs");
    const os = await import("node:os");
    const path = await import("node:path");
    const spec = { ...TINY_SPECS.qwen3, numLayers: 1 };
    const schedule = { lr: 3e-3, warmupSteps: 2, kind: "cosine" as const, totalSteps: 6 };
    const rand = mulberry32(31);
    const batches = Array.from({ length: 4 }, () =>
      Array.from({ length: 4 }, () => ({
        tokens: Int32Array.from({ length: 9 }, () => Math.floor(rand() * spec.vocabSize)),
        lossMask: Uint8Array.from({ length: 9 }, (_, t) => (t >= 2 ? 1 : 0)),
      })),
    );
    const run = async (trainer: PolicyTrainer, from: number, to: number) => {
      for (let i = from; i < to; i++) await trainer.trainStep(batches[i], { objective: "supervised" });
    };
    const straight = await Model.create(spec, 12, { device: "cpu", dtype });
    await run(new PolicyTrainer(straight, { schedule, weightDecay: 0.1 }), 0, 4);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-resume-"));
    const first = await Model.create(spec, 12, { device: "cpu", dtype });
    const firstTrainer = new PolicyTrainer(first, { schedule, weightDecay: 0.1 });
    await run(firstTrainer, 0, 2);
    await first.save(path.join(dir, "model"));
    await firstTrainer.saveState(path.join(dir, "optimizer.safetensors"));
    first.dispose();

    const resumed = await Model.load(path.join(dir, "model"), { device: "cpu", dtype });
    const resumedTrainer = new PolicyTrainer(resumed, { schedule, weightDecay: 0.1 });
    await resumedTrainer.loadState(path.join(dir, "optimizer.safetensors"));
    expect(resumedTrainer.step).toBe(2);
    await run(resumedTrainer, 2, 4);
    expect(maxAbsDiff(await resumed.forward(probe, 2, 10), await straight.forward(probe, 2, 10))).toBe(0);
    resumed.dispose();
    straight.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
