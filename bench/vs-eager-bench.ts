/**
 * The engine against PyTorch eager in the same run: forward, train step, KV-cached decode and the
 * fused log-prob + loss, each against an eager implementation of the same model and step.
 *
 * The baseline is libtorch's C++ API composed the way transformers' modeling_qwen3.py runs in eager
 * mode — one ATen op per PyTorch op, nothing chunked or fused, a DynamicCache grown by cat, the
 * logits processors of generate(), torch.optim.AdamW and clip_grad_norm_ — on a copy of the same
 * weights (native/core/bench_kernels.h EagerModel). It is not the product path; it runs without
 * Python's interpreter overhead, so it is a stronger baseline than transformers itself.
 *
 * Product and eager calls alternate round by round (the order flips every round) after a warm-up
 * round, and each figure is the median over rounds. The warm-up round doubles as the honesty
 * check: the logits of both forwards must agree, and the first train step of each, from the same
 * weights, must give the same loss and gradient norm.
 *
 * Train-step memory is read two ways: the peak bytes of tensors during one step (the counting
 * allocator of native/core/memory_tracker.h, both sides in this process, reset before each call),
 * and the peak RSS of a fresh process per side that runs nothing but that side's train steps
 * (bench/vs-eager-worker.ts; VmHWM of /proc/self/status). In one process the high-water mark is
 * shared, so a fair RSS comparison needs a process each. Both sides run on the CPU engine thread
 * (native/README.md, "Threads"), so both allocate from one thread, as Python's training loop does.
 * (Before the engine had its own thread, calls rotated over libuv's four pool threads, each with
 * its own glibc malloc arena, and RSS crept up step after step: eager 2.2 -> 5.5 GiB over 6 steps.)
 * The eager side allocates through stock libtorch, bypassing the engine's block cache.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { LOGPROB_CHUNK_SIZE, native, type LossOptions, type ModelSpec, type NativeEagerModel } from "../lib/native";
import { benchEnvironment, type Bench } from "./harness";
import { benchModelSpec } from "./model-benches";
import type { VsEagerWorkerJob, VsEagerWorkerResult } from "./vs-eager-worker";

const WORKER = path.join(__dirname, "vs-eager-worker.js");

/** The agreement the forward logits must reach (fp32, max |octo - eager|). */
export const LOGITS_TOLERANCE = 1e-4;

/** Shapes of one run: the figures (full) or a smoke test (quick). */
export function vsEagerWorkload(quick: boolean) {
  return {
    rounds: quick ? 3 : 9,
    forward: { batch: quick ? 2 : 4, length: quick ? 32 : 256 },
    trainStep: { batch: quick ? 2 : 4, length: quick ? 32 : 256, promptTokens: quick ? 4 : 16 },
    decode: { prompts: quick ? 2 : 8, promptTokens: quick ? 8 : 32, newTokens: quick ? 8 : 64 },
    loss: { tokens: quick ? 64 : 1024 },
    rssSteps: quick ? 2 : 3,
  };
}

/** The targets (octo / eager tokens/s at least, peak RSS at most), recorded beside the figures. */
export const VS_EAGER_TARGETS = { forward: 1.1, trainStep: 1.1, decode: 1.2, trainStepPeakRss: 1.0 };

/** A simple PPO-clip objective (token ratios, ε = 0.2, token-mean), the same on both sides. */
export const VS_EAGER_LOSS: LossOptions = { ratioLevel: "token", clipLow: 0.2, clipHigh: 0.2, aggregation: "token-mean" };
/** AdamW and clipping as PolicyTrainer's defaults (lr small: the weights barely move between rounds). */
export const VS_EAGER_OPTIMIZER = { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0 };
/** What generate samples with on both sides (no EOS: every row makes all its tokens). */
export const VS_EAGER_SAMPLING = { temperature: 0.7, topP: 0.95 };

/** The train-step batch: full-length rows, the loss on all but a prompt of `promptTokens`, advantages ±1. */
export function trainSequences(spec: ModelSpec, batch: number, length: number, promptTokens: number): TrainSequence[] {
  return Array.from({ length: batch }, (_, b) => ({
    tokens: Int32Array.from({ length }, (_, t) => (b * 7919 + t * 104729) % spec.vocabSize),
    lossMask: Float32Array.from({ length }, (_, t) => (t >= promptTokens ? 1 : 0)),
    advantage: b % 2 === 0 ? 1 : -1,
  }));
}

/** The same sequences as the eager train step's [batch, length] arrays (old log-probs filled in). */
export function eagerTrainBatch(sequences: TrainSequence[]): Parameters<NativeEagerModel["trainStep"]>[0] {
  const batch = sequences.length, length = sequences[0].tokens.length;
  const perToken = (f: (s: TrainSequence, t: number) => number) => {
    const out = new Float32Array(batch * length);
    sequences.forEach((s, b) => {
      for (let t = 0; t < length; t++) out[b * length + t] = f(s, t);
    });
    return out;
  };
  const inputIds = new Int32Array(batch * length);
  sequences.forEach((s, b) => inputIds.set(s.tokens, b * length));
  return {
    inputIds,
    batch,
    length,
    attentionMask: new Uint8Array(batch * length).fill(1),
    lossMask: perToken((s, t) => s.lossMask[t]),
    advantages: perToken((s) => s.advantage as number),
    oldLogprobs: perToken((s, t) => s.oldLogprobs![t]),
    loss: VS_EAGER_LOSS,
    optimizer: VS_EAGER_OPTIMIZER,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const mib = (bytes: number) => bytes / 2 ** 20;

interface Call {
  seconds: number;
  /** peak tensor bytes on the device during the call, above what was held before it */
  peakBytes: number;
}

interface Side<T> {
  run: () => Promise<T>;
  /** the call's own timing, when it measures itself (seconds); default: wall time around it */
  seconds?: (result: T) => number;
}

/**
 * Alternates the product and the eager call for 1 + `rounds` rounds (the first a warm-up), the
 * order flipped each round. Returns every timed call and the warm-up results.
 */
async function interleave<A, B>(rounds: number, device: string, octo: Side<A>, eager: Side<B>) {
  const ops = native().ops;
  const measure = async <T>(side: Side<T>): Promise<{ call: Call; result: T }> => {
    const before = ops.deviceMemory(device, { resetPeak: true }).currentBytes;
    const start = process.hrtime.bigint();
    const result = await side.run();
    const wall = Number(process.hrtime.bigint() - start) / 1e9;
    return { call: { seconds: side.seconds ? side.seconds(result) : wall, peakBytes: ops.deviceMemory(device).peakBytes - before }, result };
  };
  const calls = { octo: [] as Call[], eager: [] as Call[] };
  let warmUp: { octo: A; eager: B } | undefined;
  for (let round = 0; round <= rounds; round++) {
    let a: { call: Call; result: A }, b: { call: Call; result: B };
    if (round % 2 === 0) {
      a = await measure(octo);
      b = await measure(eager);
    } else {
      b = await measure(eager);
      a = await measure(octo);
    }
    if (round === 0) {
      warmUp = { octo: a.result, eager: b.result };
      continue;
    }
    calls.octo.push(a.call);
    calls.eager.push(b.call);
  }
  return { calls, warmUp: warmUp! };
}

/** tokens/s of both sides, their ratio (octo / eager), and the peak tensor memory of a call. */
function figure(tokens: number, calls: { octo: Call[]; eager: Call[] }) {
  const octoSeconds = median(calls.octo.map((c) => c.seconds)), eagerSeconds = median(calls.eager.map((c) => c.seconds));
  const octoPeak = Math.max(...calls.octo.map((c) => c.peakBytes)), eagerPeak = Math.max(...calls.eager.map((c) => c.peakBytes));
  return {
    tokens,
    octoTokensPerSecond: tokens / octoSeconds,
    eagerTokensPerSecond: tokens / eagerSeconds,
    ratio: eagerSeconds / octoSeconds,
    octoSeconds,
    eagerSeconds,
    octoPeakTensorMiB: mib(octoPeak),
    eagerPeakTensorMiB: mib(eagerPeak),
    peakTensorRatio: octoPeak / eagerPeak,
    roundSeconds: { octo: calls.octo.map((c) => c.seconds), eager: calls.eager.map((c) => c.seconds) },
  };
}

/** What the train-step RSS processes run with: this process's intra-op threads. */
function childEnvironment(): Record<string, string> {
  return { OCTO_NATIVE_THREADS: String(native().info().threads) };
}

/** Runs one side's train steps in a fresh process (bench/vs-eager-worker.ts) and returns its report. */
function trainStepInChild(job: VsEagerWorkerJob): VsEagerWorkerResult {
  if (!fs.existsSync(WORKER)) throw new Error(`${WORKER} is missing: the bench runs the compiled worker (npm run build:ts)`);
  const child = spawnSync(process.execPath, [WORKER, JSON.stringify(job)], {
    encoding: "utf8",
    env: { ...process.env, ...childEnvironment() },
    timeout: 900_000,
  });
  if (child.status !== 0)
    throw new Error(`the vs-eager ${job.side} worker failed (exit ${child.status ?? child.signal}):\n${child.stderr}`);
  return JSON.parse(child.stdout.trim().split("\n").pop()!) as VsEagerWorkerResult;
}

export const vsEagerBench: Bench = {
  description: "forward, train step, decode and fused loss tokens/s vs PyTorch-eager-style libtorch on the same weights; train-step peak memory",
  async run({ device, quick }) {
    const w = vsEagerWorkload(quick);
    const loadAtStart = os.loadavg();
    const spec = benchModelSpec(quick);
    const ops = native().ops;
    ops.deviceMemory("cpu"); // installs the CPU counting allocator: tensors are counted from here on
    const model = await Model.create(spec, 0, { device });
    const memoryDevice = model.device;
    const eager = new ops.EagerModel(model.handle);
    try {
      // --- forward: logits of [batch, length] ids, no gradient ---
      const { batch: fb, length: fl } = w.forward;
      const forwardIds = Int32Array.from({ length: fb * fl }, (_, i) => (i * 7919) % spec.vocabSize);
      const octoLogits = await model.forward(forwardIds, fb, fl);
      const eagerLogits = (await eager.forward({ inputIds: forwardIds, batch: fb, length: fl, returnLogits: true }))!;
      let logitsMaxAbsDifference = 0, logitsMaxAbs = 0;
      for (let i = 0; i < octoLogits.length; i++) {
        logitsMaxAbsDifference = Math.max(logitsMaxAbsDifference, Math.abs(octoLogits[i] - eagerLogits[i]));
        logitsMaxAbs = Math.max(logitsMaxAbs, Math.abs(octoLogits[i]));
      }
      const forward = await interleave(w.rounds, memoryDevice, { run: () => model.forward(forwardIds, fb, fl) }, {
        run: () => eager.forward({ inputIds: forwardIds, batch: fb, length: fl }),
      });

      // --- decode: equal-length prompts, one sample each, no EOS ---
      const { prompts, promptTokens, newTokens } = w.decode;
      const promptIds = Int32Array.from({ length: prompts * promptTokens }, (_, i) => (i * 104729 + 17) % spec.vocabSize);
      const requests = Array.from({ length: prompts }, (_, p) => ({ promptIds: promptIds.slice(p * promptTokens, (p + 1) * promptTokens), seed: p }));
      const eagerPrompts = { promptIds, batch: prompts, length: promptTokens };
      // Check: greedy decoding gives the same tokens on both sides.
      const octoGreedy = await model.generate(requests, { temperature: 0, maxNewTokens: newTokens });
      const eagerGreedy = await eager.generate({ ...eagerPrompts, temperature: 0, topP: 1, maxNewTokens: newTokens, seed: 0 });
      let sameGreedyTokens = 0;
      octoGreedy.forEach(([sample], p) => sample.tokens.forEach((token, t) => (sameGreedyTokens += token === eagerGreedy[p * newTokens + t] ? 1 : 0)));
      let decodeRound = 0;
      let octoGenerated = 0;
      const decode = await interleave(
        w.rounds,
        memoryDevice,
        {
          run: async () => {
            const results = await model.generate(requests, { ...VS_EAGER_SAMPLING, maxNewTokens: newTokens });
            octoGenerated = results.reduce((n, [sample]) => n + sample.tokens.length, 0);
          },
        },
        { run: () => eager.generate({ ...eagerPrompts, ...VS_EAGER_SAMPLING, maxNewTokens: newTokens, seed: decodeRound++ }) },
      );

      // --- fused loss: token log-probs + policy loss + backward at the model's LM-head shape ---
      const lossShape = { tokens: w.loss.tokens, hiddenSize: spec.hiddenSize, vocabSize: spec.vocabSize, chunkSize: LOGPROB_CHUNK_SIZE, lmHeadGrad: true, iterations: 1, device: memoryDevice };
      const lossSide = (isEager: boolean) => ({ run: () => ops.benchPolicyLoss({ ...lossShape, eager: isEager }), seconds: (r: { seconds: number }) => r.seconds });
      const loss = await interleave(w.rounds, memoryDevice, lossSide(false), lossSide(true));

      // --- train step: forward + loss + backward + clip + AdamW (last: it moves the weights) ---
      const { batch: tb, length: tl, promptTokens: tp } = w.trainStep;
      const sequences = trainSequences(spec, tb, tl, tp);
      const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens));
      sequences.forEach((s, i) => (s.oldLogprobs = old[i]));
      const eagerBatch = eagerTrainBatch(sequences);
      const { lr, maxGradNorm, weightDecay, beta1, beta2, eps } = VS_EAGER_OPTIMIZER;
      const trainer = new PolicyTrainer(model, { schedule: { lr, warmupSteps: 0, kind: "constant" }, maxGradNorm, weightDecay, beta1, beta2, eps });
      const train = await interleave(
        w.rounds,
        memoryDevice,
        { run: () => trainer.trainStep(sequences, { objective: "policy", loss: VS_EAGER_LOSS }) },
        { run: () => eager.trainStep(eagerBatch) },
      );
      const firstOcto = train.warmUp.octo, firstEager = train.warmUp.eager;

      // --- train-step peak RSS, a fresh process per side ---
      const job = (side: "octo" | "eager"): VsEagerWorkerJob => ({ side, spec, device, batch: tb, length: tl, promptTokens: tp, steps: w.rssSteps });
      const rssOcto = trainStepInChild(job("octo"));
      const rssEager = trainStepInChild(job("eager"));

      const figures = {
        forward: { ...figure(fb * fl, forward.calls), octoLogitsBytesToJs: octoLogits.byteLength },
        trainStep: figure(tb * tl, train.calls),
        decode: { ...figure(prompts * newTokens, decode.calls), promptTokensPerRow: promptTokens, octoGeneratedTokens: octoGenerated },
        loss: { ...figure(w.loss.tokens, loss.calls), timing: "inside the op: one forward + backward after its own warm-up" },
      };
      const throughputRatios = { forward: figures.forward.ratio, trainStep: figures.trainStep.ratio, decode: figures.decode.ratio, loss: figures.loss.ratio };
      const rssRatio = rssOcto.peakRssBytes !== null && rssEager.peakRssBytes !== null ? rssOcto.peakRssBytes / rssEager.peakRssBytes : null;
      const info = native().info();
      return {
        bench: "vs-eager",
        ratioMeaning:
          "the smallest of the throughput ratios octo tokens/s / eager tokens/s of forward, train step and decode (the issue's " +
          "targeted figures; the fused loss is in throughputRatios), eager = libtorch composed as transformers' PyTorch eager " +
          "code on the same weights, same run (higher is better)",
        ratio: Math.min(throughputRatios.forward, throughputRatios.trainStep, throughputRatios.decode),
        throughputRatios,
        targets: VS_EAGER_TARGETS,
        trainStepMemory: {
          peakRssRatio: rssRatio,
          peakRssRatioMeaning: "peak RSS of a fresh process running only octo's train steps / the same for eager (lower is better)",
          processEnvironment: childEnvironment(),
          octo: rssOcto,
          eager: rssEager,
          peakTensorRatio: figures.trainStep.peakTensorRatio,
          peakTensorRatioMeaning: "peak tensor bytes during one step above the bytes held before it (counting allocator), octo / eager",
        },
        figures,
        checks: {
          logitsMaxAbsDifference,
          logitsMaxAbs,
          logitsTolerance: LOGITS_TOLERANCE,
          logitsAgree: logitsMaxAbsDifference <= LOGITS_TOLERANCE,
          firstTrainStep: {
            octoLoss: firstOcto.loss,
            eagerLoss: firstEager.loss,
            lossDifference: Math.abs(firstOcto.loss - firstEager.loss),
            octoGradNorm: firstOcto.gradNorm,
            eagerGradNorm: firstEager.gradNorm,
            gradNormRelativeDifference: Math.abs(firstOcto.gradNorm - firstEager.gradNorm) / Math.max(Math.abs(firstEager.gradNorm), 1e-12),
          },
          greedyDecodeSameTokens: sameGreedyTokens / (prompts * newTokens),
          fusedLossDifference: Math.abs(loss.warmUp.octo.loss - loss.warmUp.eager.loss),
        },
        workload: {
          rounds: w.rounds,
          rssSteps: w.rssSteps,
          forward: { ...w.forward, product: "Model.forward (logits handed to JS as a Float32Array over engine memory, no copy)", eager: "model(input_ids).logits under no_grad (logits stay a tensor)" },
          trainStep: { ...w.trainStep, loss: VS_EAGER_LOSS, optimizer: VS_EAGER_OPTIMIZER, product: "PolicyTrainer.trainStep", eager: "forward, log_softmax + gather, policy loss, backward, clip_grad_norm_, AdamW, zero_grad" },
          decode: { ...w.decode, sampling: { ...VS_EAGER_SAMPLING, topK: 0 }, product: "Model.generate", eager: "generate(): DynamicCache, logits_to_keep=1 prefill, temperature + top-p warpers, multinomial" },
          loss: { ...lossShape, product: "tokenLogprobs (chunked, LOGPROB_CHUNK_SIZE) + fused policyLoss", eager: "tokenLogprobsEager (full logits) + policyLossEager" },
        },
        model: { spec, parameters: eager.parameterCount, device: model.device, dtype: model.handle.dtype },
        engine: { threads: info.threads, torchVersion: info.torchVersion, features: info.features, scaledDotProductAttention: info.scaledDotProductAttention },
        // 1/5/15-minute load averages: other work on the machine while this ran (the rounds interleave to share it).
        loadAverage: { start: loadAtStart, end: os.loadavg() },
        environment: benchEnvironment(),
      };
    } finally {
      model.dispose();
    }
  },
};
