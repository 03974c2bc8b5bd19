// Peak device memory of the fused loss against the eager formula (scripts/gpu-check.sh, step
// loss-memory): token log-probs + policy loss + backward at 8192 tokens, hidden 1536, vocab 151,936
// (Qwen2.5-1.5B's LM head), through ops.benchPolicyLoss, the entry point of `bench loss`
// (bench/training-benches.ts): bf16 on CUDA, chunked at the default (LOGPROB_CHUNK_SIZE: 0, chunks
// planned from the op's memory budget) against full logits.
//
// The working peak of a call is its peak above what was allocated once its inputs were made (the
// hidden states, the LM head, the per-token arrays). The engine reports it itself where it can
// read the device's allocator (`peakBytes` >= 0: the CPU counter, and on CUDA libtorch's caching
// allocator in builds that have ops.deviceMemory). Where it reports -1 on CUDA, the peak comes from
// ops.deviceMemory around the call, less the inputs' bytes. Without either: not implemented.
// The headline ratio is working peak fused / eager with the LM head frozen, as in `bench loss`
// (target <= 0.25).
"use strict";
const { dist, runStep } = require("./step");
const { LOGPROB_CHUNK_SIZE, native } = dist("lib/native");

const MIB = 2 ** 20;
const TARGET_RATIO = 0.25;

/** Bytes benchPolicyLoss allocates on the device before its first op (native/core/bench_kernels.cpp). */
function inputBytes({ tokens, hiddenSize, vocabSize }, elementBytes) {
  const hidden = tokens * hiddenSize * elementBytes, lmHead = vocabSize * hiddenSize * elementBytes;
  const perToken = tokens * (8 /* targets int64 */ + 4 * 4 /* old, ref, advantages, loss mask fp32 */ + 8 /* sequence ids int64 */);
  return hidden + lmHead + perToken;
}

runStep(
  { device: { type: "string", default: "cuda" }, small: { type: "boolean", default: false } },
  async ({ device, small }) => {
    const ops = native().ops;
    const onCuda = device.startsWith("cuda");
    const readsDevice = typeof ops.deviceMemory === "function";
    const shape = small
      ? { tokens: 256, hiddenSize: 64, vocabSize: 4096, chunkSize: 64 }
      : { tokens: 8192, hiddenSize: 1536, vocabSize: 151936, chunkSize: LOGPROB_CHUNK_SIZE };
    const inputs = inputBytes(shape, onCuda ? 2 : 4);
    const measure = async (eager, lmHeadGrad) => {
      const before = readsDevice ? ops.deviceMemory(device, { resetPeak: true }) : undefined;
      const run = await ops.benchPolicyLoss({ ...shape, eager, lmHeadGrad, iterations: 2, device });
      const after = readsDevice ? ops.deviceMemory(device) : undefined;
      const peakAboveStart = readsDevice ? after.peakBytes - before.currentBytes : undefined;
      const workingPeak = run.peakBytes >= 0 ? run.peakBytes : readsDevice ? peakAboveStart - inputs : undefined;
      return {
        seconds: run.seconds,
        loss: run.loss,
        workingPeakMiB: workingPeak === undefined ? null : workingPeak / MIB,
        enginePeakMiB: run.peakBytes >= 0 ? run.peakBytes / MIB : null,
        peakAboveStartMiB: readsDevice ? peakAboveStart / MIB : null,
      };
    };
    // The process's first call also pays one-time set-up (allocator, thread pool, kernel loading).
    const warmUp = await measure(false, false);
    if (warmUp.workingPeakMiB === null)
      return { status: "not-implemented", reason: "no peak to read: benchPolicyLoss reports -1 on this device and ops.deviceMemory(device, {resetPeak}) is not in this build", warmUp };
    const fused = await measure(false, false);
    const eager = await measure(true, false);
    const fusedWithHead = await measure(false, true);
    const eagerWithHead = await measure(true, true);
    const ratio = fused.workingPeakMiB / eager.workingPeakMiB;
    return {
      status: "ok",
      ratio,
      ratioMeaning: `working peak memory of the fused op / eager formula, LM head frozen (target <= ${TARGET_RATIO}; lower is better)`,
      withinTarget: ratio <= TARGET_RATIO,
      timeRatio: fused.seconds / eager.seconds,
      ...shape,
      device,
      dtype: onCuda ? "bfloat16" : "float32",
      peakSource: fused.enginePeakMiB !== null ? "the engine's own (benchPolicyLoss peakBytes)" : "ops.deviceMemory around the call, less the inputs' bytes",
      inputMiB: inputs / MIB,
      fused,
      eager,
      withLmHeadGrad: { memoryRatio: fusedWithHead.workingPeakMiB / eagerWithHead.workingPeakMiB, timeRatio: fusedWithHead.seconds / eagerWithHead.seconds, fused: fusedWithHead, eager: eagerWithHead },
      lossDifference: Math.abs(fused.loss - eager.loss),
    };
  },
);
