// Train-step throughput and model FLOP utilisation (scripts/gpu-check.sh, step train-mfu): a random
// model of Qwen2.5-1.5B's shape (hidden 1536, 28 layers, 12 heads, 2 kv heads, intermediate 8960,
// vocab 151936, tied) in bf16 on CUDA, full optimizer steps of the policy objective as
// `bench train-step` runs them (bench/training-benches.ts: PolicyTrainer.trainStep) with GRPO's
// token ratio and clip 0.2 (so the steps' ratios stay inside the clip and every step has a gradient),
// 16 sequences of 1024 tokens in micro-batches of 8, no activation checkpointing.
//
//   MFU = 6 · N · tokens/s / peak dense bf16 FLOP/s of the device
//
// N counts every parameter once (the tied embedding once: it is the LM head's matmul); 6 = 2 for
// the forward, 4 for the backward; attention's own FLOPs are left out of this convention and given
// apart (mfuWithAttention). The peak is the datasheet's, picked by the device's name.
"use strict";
const { dist, median, runStep, seconds } = require("./step");
const { Model } = dist("lib/engine/model");
const { PolicyTrainer } = dist("lib/engine/trainer");
const { native } = dist("lib/native");

/** Dense bf16 tensor-core peaks (NVIDIA datasheets, without sparsity), matched in this order. */
const PEAK_BF16_FLOPS = [
  { match: /H100.*PCIe/i, name: "H100 PCIe", flops: 756e12 },
  { match: /H100/i, name: "H100 SXM", flops: 989e12 },
  { match: /H200/i, name: "H200", flops: 989e12 },
  { match: /A100/i, name: "A100", flops: 312e12 },
];

function qwen25Spec(small) {
  return {
    architecture: "Qwen2ForCausalLM",
    vocabSize: small ? 1024 : 151936,
    hiddenSize: small ? 64 : 1536,
    intermediateSize: small ? 128 : 8960,
    numLayers: small ? 2 : 28,
    numHeads: small ? 4 : 12,
    numKvHeads: 2,
    headDim: small ? 16 : 128,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    tieWordEmbeddings: true,
    attentionBias: true,
    outputBias: false,
    mlpBias: false,
    qkNorm: false,
    rope: { type: "default", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32768 },
  };
}

runStep(
  { device: { type: "string", default: "cuda" }, "device-name": { type: "string", default: "" }, small: { type: "boolean", default: false } },
  async ({ device, "device-name": deviceName, small }) => {
    const spec = qwen25Spec(small);
    const batch = small ? 4 : 16, length = small ? 32 : 1024, microBatchSize = small ? 2 : 8, timedSteps = small ? 2 : 3;
    const created = await seconds(() => Model.create(spec, 0, { device }));
    const model = created.value;
    try {
      const sequences = Array.from({ length: batch }, (_, b) => ({
        tokens: Int32Array.from({ length }, (_, t) => (b * 7919 + t * 104729) % spec.vocabSize),
        lossMask: Uint8Array.from({ length }, (_, t) => (t >= 16 ? 1 : 0)),
        advantage: b % 2 === 0 ? 1 : -1,
      }));
      const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens), { microBatchSize });
      sequences.forEach((s, i) => (s.oldLogprobs = old[i]));
      const loss = { ratioLevel: "token", clipLow: 0.2, clipHigh: 0.2, aggregation: "token-mean" };
      const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-6, warmupSteps: 0, kind: "constant" }, microBatchSize });
      const step = () => trainer.trainStep(sequences, { objective: "policy", loss });
      const first = await seconds(step); // allocates the optimizer state
      const times = [];
      let last;
      for (let i = 0; i < timedSteps; i++) {
        const timed = await seconds(step);
        times.push(timed.seconds);
        last = timed.value;
      }
      const stepSeconds = median(times);
      const tokens = batch * length;
      const tokensPerSecond = tokens / stepSeconds;
      const parameters = native().expectedParameters(spec).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      const modelFlopsPerSecond = 6 * parameters * tokensPerSecond;
      const attentionFlopsPerStep = 3 * 4 * batch * length * length * spec.numHeads * spec.headDim * spec.numLayers; // as bench train-step
      const peak = PEAK_BF16_FLOPS.find((p) => p.match.test(deviceName));
      return {
        status: last.skipped ? "failed" : "ok",
        ...(last.skipped ? { error: "the timed step was skipped (non-finite loss or gradients)" } : {}),
        tokensPerSecond,
        mfu: peak ? modelFlopsPerSecond / peak.flops : null,
        mfuMeaning: "6 · parameters · tokens/s / the device's peak dense bf16 FLOP/s",
        mfuWithAttention: peak ? (modelFlopsPerSecond + attentionFlopsPerStep / stepSeconds) / peak.flops : null,
        peak: peak ? { device: peak.name, bf16FlopsPerSecond: peak.flops, from: deviceName } : { device: null, from: deviceName || "(no --device-name)", note: "no known peak for this device: MFU left out" },
        modelTflopsPerSecond: modelFlopsPerSecond / 1e12,
        parameters,
        batch,
        length,
        microBatchSize,
        stepSeconds,
        stepTimes: times,
        firstStepSeconds: first.seconds,
        createSeconds: created.seconds,
        lastStep: { loss: last.loss, gradNorm: last.gradNorm, skipped: last.skipped, tokens: last.tokens },
        device: model.device,
        dtype: model.handle.dtype,
        model: spec,
      };
    } finally {
      model.dispose();
    }
  },
);
