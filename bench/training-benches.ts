/** Benches of the training core: the fused loss (memory, time) and a whole optimizer step. */
import os from "node:os";

import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { native, type LogprobsPlan } from "../lib/native";
import { benchEnvironment, medianSeconds, type Bench } from "./harness";
import { benchModelSpec } from "./model-benches";

/** What the eager formula holds at its peak besides its inputs: three [tokens x vocab] fp32 buffers (measured). */
const EAGER_PEAK_BUFFERS = 3;

interface LossCase {
  tokens: number;
  lmHeadGrad: boolean;
  memoryRatio: number | null;
  timeRatio: number | null;
  fused: { seconds: number; peakMiB: number | null; plan?: LogprobsPlan };
  eager: { seconds: number; peakMiB: number | null } | null;
  lossDifference?: number;
  eagerSkipped?: string;
}

export const lossBench: Bench = {
  description:
    "token log-probs + policy loss + backward, fused (chunks planned from its memory budget) vs eager on full logits, " +
    "at 1k, 8k and 32k tokens (--quick: 128, 1k, 4k), LM head frozen and trained",
  async run({ device, quick }) {
    // The bench model's LM head (bench/model-benches.ts): eager at 32k tokens x 151,936 vocab would need ~60 GB.
    const hiddenSize = quick ? 256 : 512;
    const vocabSize = benchModelSpec(quick).vocabSize;
    const tokenCounts = quick ? [128, 1024, 4096] : [1024, 8192, 32768];
    const headline = tokenCounts[1];
    const onCpu = device === "cpu" || !native().info().cudaAvailable;
    const mib = (bytes: number) => (bytes < 0 ? null : bytes / 2 ** 20);
    const cases: LossCase[] = [];
    // The process's first calls pay one-time set-up (thread pool, allocator): not the first case's.
    for (const eager of [false, true])
      await native().ops.benchPolicyLoss({ tokens: 64, hiddenSize: 64, vocabSize: 1024, chunkSize: 0, iterations: 1, device, eager, lmHeadGrad: true });
    type Run = Awaited<ReturnType<ReturnType<typeof native>["ops"]["benchPolicyLoss"]>>;
    for (const tokens of tokenCounts) {
      // Fused and eager alternate, and each keeps its fastest round: a machine shared with other
      // work slows whichever runs at the time, not one side throughout.
      const rounds = tokens >= 32768 ? 1 : 2;
      const shape = { tokens, hiddenSize, vocabSize, chunkSize: 0, iterations: 1, device };
      for (const lmHeadGrad of [false, true]) {
        // Eager only where its logits fit: a run that swaps or is killed measures nothing.
        const eagerBytes = EAGER_PEAK_BUFFERS * tokens * vocabSize * 4 + vocabSize * hiddenSize * 4 * 2;
        const eagerFits = !onCpu || eagerBytes < 0.8 * os.freemem();
        let fused: Run | undefined, eager: Run | null = null;
        const fastest = (best: Run | null | undefined, run: Run) => (best && best.seconds <= run.seconds ? best : run);
        for (let round = 0; round < rounds; round++) {
          fused = fastest(fused, await native().ops.benchPolicyLoss({ ...shape, eager: false, lmHeadGrad }));
          if (eagerFits) eager = fastest(eager, await native().ops.benchPolicyLoss({ ...shape, eager: true, lmHeadGrad }));
        }
        if (!fused) throw new Error("bench loss: no fused run");
        const measured = (r: { seconds: number; peakBytes: number }) => ({ seconds: r.seconds, peakMiB: mib(r.peakBytes) });
        cases.push({
          tokens,
          lmHeadGrad,
          memoryRatio: eager && fused.peakBytes > 0 && eager.peakBytes > 0 ? fused.peakBytes / eager.peakBytes : null,
          timeRatio: eager ? fused.seconds / eager.seconds : null,
          fused: { ...measured(fused), plan: fused.plan },
          eager: eager ? measured(eager) : null,
          ...(eager
            ? { lossDifference: Math.abs(fused.loss - eager.loss) }
            : { eagerSkipped: `needs ~${Math.round(eagerBytes / 2 ** 20)} MiB, ${Math.round(os.freemem() / 2 ** 20)} MiB free` }),
        });
      }
    }
    const at = (tokens: number, lmHeadGrad: boolean) => cases.find((c) => c.tokens === tokens && c.lmHeadGrad === lmHeadGrad)!;
    const frozen = at(headline, false), trained = at(headline, true);
    return {
      bench: "loss",
      ratioMeaning: `peak memory of the fused op / eager formula at ${headline} tokens, LM head frozen (target <= 0.25; lower is better)`,
      ratio: frozen.memoryRatio ?? NaN,
      timeRatio: frozen.timeRatio ?? NaN,
      timeRatioMeaning: "fused time / eager time, same case (target <= 1.1); each the fastest of its alternated rounds (one warm-up and one timed run each; 2 rounds, 1 at 32k tokens)",
      withLmHeadGrad: {
        memoryRatio: trained.memoryRatio,
        memoryRatioMeaning: `the same with the LM head trained (target <= 0.5)`,
        timeRatio: trained.timeRatio,
      },
      hiddenSize,
      vocabSize,
      device,
      cases,
      note: onCpu
        ? "CPU peak from a counting allocator around libtorch's CPU allocator; fp32"
        : "GPU peak: allocated bytes of libtorch's CUDA caching allocator; bf16 inputs",
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
