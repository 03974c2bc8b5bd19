/** Benches of the training core: the fused loss (memory, time) and a whole optimizer step. */
import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { native } from "../lib/native";
import { benchEnvironment, medianSeconds, type Bench } from "./harness";
import { benchModelSpec } from "./model-benches";

export const lossBench: Bench = {
  description: "token log-probs + policy loss + backward at Qwen2.5-1.5B shapes (vocab 151,936, hidden 1536): chunked/fused vs eager",
  async run({ device, quick }) {
    const shape = { tokens: quick ? 64 : 256, hiddenSize: 1536, vocabSize: quick ? 32000 : 151936, chunkSize: quick ? 16 : 64, device };
    const iterations = quick ? 1 : 2;
    const measure = (eager: boolean, lmHeadGrad: boolean) => native().ops.benchPolicyLoss({ ...shape, eager, lmHeadGrad, iterations });
    // Frozen LM head: the memory that grows with tokens (logits and their gradients) — the headline.
    const fused = await measure(false, false);
    const eager = await measure(true, false);
    // Trained LM head: both sides also hold the [vocab x hidden] weight gradient.
    const fusedWithHead = await measure(false, true);
    const eagerWithHead = await measure(true, true);
    const mib = (bytes: number) => (bytes < 0 ? null : bytes / 2 ** 20);
    return {
      bench: "loss",
      ratioMeaning: "peak memory of the fused op / eager formula, LM head frozen (target <= 0.25; lower is better)",
      ratio: fused.peakBytes > 0 && eager.peakBytes > 0 ? fused.peakBytes / eager.peakBytes : NaN,
      timeRatio: fused.seconds / eager.seconds,
      timeRatioMeaning: "fused time / eager time (target <= 1)",
      ...shape,
      fused: { seconds: fused.seconds, peakMiB: mib(fused.peakBytes) },
      eager: { seconds: eager.seconds, peakMiB: mib(eager.peakBytes) },
      withLmHeadGrad: {
        memoryRatio: fusedWithHead.peakBytes / eagerWithHead.peakBytes,
        timeRatio: fusedWithHead.seconds / eagerWithHead.seconds,
        fused: { seconds: fusedWithHead.seconds, peakMiB: mib(fusedWithHead.peakBytes) },
        eager: { seconds: eagerWithHead.seconds, peakMiB: mib(eagerWithHead.peakBytes) },
      },
      lossDifference: Math.abs(fused.loss - eager.loss),
      note: device === "cpu" || !native().info().cudaAvailable ? "CPU peak from a counting allocator around libtorch's CPU allocator" : "GPU peak: allocated bytes of libtorch's CUDA caching allocator",
      environment: benchEnvironment(),
    };
  },
};

export const trainStepBench: Bench = {
  description: "tokens/s of a full forward + backward + AdamW step of a ~50M-parameter model vs the same-run GEMM rate",
  async run({ device, quick }) {
    const spec = benchModelSpec(quick);
    const batch = 4, length = quick ? 64 : 256;
    const model = await Model.create(spec, 0, { device });
    try {
      const sequences: TrainSequence[] = Array.from({ length: batch }, (_, b) => ({
        tokens: Int32Array.from({ length }, (_, t) => (b * 7919 + t * 104729) % spec.vocabSize),
        lossMask: Uint8Array.from({ length }, (_, t) => (t >= 16 ? 1 : 0)),
        advantage: b % 2 === 0 ? 1 : -1,
      }));
      const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens));
      sequences.forEach((s, i) => (s.oldLogprobs = old[i]));
      const loss = { ratioLevel: "sequence" as const, clipLow: 3e-4, clipHigh: 4e-4, aggregation: "seq-mean-token-mean" as const };
      const memory = native().ops;
      const measure = async (activationCheckpointing: boolean) => {
        const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-6, warmupSteps: 0, kind: "constant" }, activationCheckpointing });
        await trainer.trainStep(sequences, { objective: "policy", loss }); // optimizer state allocated
        const base = memory.deviceMemory(device, { resetPeak: true }).currentBytes;
        const seconds = await medianSeconds(quick ? 2 : 3, () => trainer.trainStep(sequences, { objective: "policy", loss }));
        return { seconds, peakActivationMiB: (memory.deviceMemory(device).peakBytes - base) / 2 ** 20 };
      };
      const plain = await measure(false);
      const checkpointed = await measure(true);
      const seconds = plain.seconds;
      const tokens = batch * length;
      const params = native().expectedParameters(spec).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      // 6 FLOPs per parameter per token (forward 2, backward 4) plus attention (x3 of its forward).
      const flops = 6 * params * tokens + 3 * 4 * batch * length * length * spec.numHeads * spec.headDim * spec.numLayers;
      const gemmSeconds = await native().timeMatmul(tokens, spec.hiddenSize, spec.intermediateSize, quick ? 3 : 10, { device });
      const gemmFlopsPerSecond = (2 * tokens * spec.hiddenSize * spec.intermediateSize) / gemmSeconds;
      return {
        bench: "train-step",
        ratioMeaning: "train-step FLOP/s / FLOP/s of a plain GEMM of the model's shapes in the same run (the CPU stand-in for MFU; higher is better)",
        ratio: flops / seconds / gemmFlopsPerSecond,
        parameters: params,
        batch,
        length,
        tokensPerSecond: tokens / seconds,
        stepSeconds: seconds,
        peakStepMiB: plain.peakActivationMiB,
        activationCheckpointing: {
          stepSeconds: checkpointed.seconds,
          peakStepMiB: checkpointed.peakActivationMiB,
          memoryRatio: checkpointed.peakActivationMiB / plain.peakActivationMiB,
          timeRatio: checkpointed.seconds / plain.seconds,
        },
        trainGflops: flops / seconds / 1e9,
        gemmGflops: gemmFlopsPerSecond / 1e9,
        device: model.device,
        environment: benchEnvironment(),
      };
    } finally {
      model.dispose();
    }
  },
};
