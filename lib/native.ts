/**
 * The whole boundary to the C++ engine in one typed file (native/binding implements it).
 * TypeScript validates and shapes arguments before they cross; C++ computes.
 * Every heavy call returns a Promise and runs on its device's engine thread, in the order made
 * (native/README.md, "Threads").
 */
import os from "node:os";

import { packageRoot } from "./util/package-root";

/**
 * Tokens per chunk of the log-prob op (docs/methods.md §4); 0: as many as the op's memory budget
 * allows, on CPU at most 512 (native/core/logprobs.h planTokenLogprobs; the budget: a quarter of what
 * the eager formula holds with the LM head frozen, half with it trained, at most 2 GiB). The one default: the run config's
 * training.logprobChunkSize and the library calls take it from here, and the binding and the core
 * require the value.
 */
export const LOGPROB_CHUNK_SIZE = 0;

/** Model hyper-parameters as the engine takes them (made by lib/engine/model-config.ts). */
export interface ModelSpec {
  architecture: "LlamaForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM";
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** bias on q/k/v projections */
  attentionBias: boolean;
  /** bias on the attention output projection */
  outputBias: boolean;
  mlpBias: boolean;
  /** per-head RMSNorm on q and k (Qwen3) */
  qkNorm: boolean;
  rope: { type: "default" | "linear" | "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
}

/** One tensor inside a safetensors file; `offset` is an absolute file position. */
export interface TensorRecord {
  name: string;
  file: string;
  dtype: string;
  shape: number[];
  offset: number;
  byteLength: number;
}

export interface ParameterShape {
  name: string;
  shape: number[];
}

export interface DeviceOptions {
  /** "auto" (CUDA when present), "cpu", "cuda", "cuda:N" */
  device?: string;
  /** "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16", "float16" */
  dtype?: string;
}

export interface NativeSamplingParams {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  maxNewTokens: number;
  eosTokenIds: number[];
  /** a sample stops once its generated tokens end with one of these */
  stopSequences: Int32Array[];
}

export interface NativeGenerationRequest {
  promptIds: Int32Array;
  /** n: samples sharing this prompt's prefill */
  samples: number;
  /** sample j draws from the counter-based stream (seed, j) */
  seed: number;
}

export interface NativeGenerateOptions {
  prefixCache?: NativePrefixCache;
  /** no KV cache: a full forward per token (reference and bench baseline) */
  recompute: boolean;
  /** static-shape decode layout (always on CUDA, where it is captured in a CUDA graph) */
  staticShapes: boolean;
  /** prompt tokens (padding included) per prefill forward; more are split into chunks */
  prefillChunkTokens: number;
}

/** Counters of one generate call (native/core/sampler.h GenerationStats). */
export interface GenerationStats {
  /** Σ prompt lengths over requests (each prompt once, not per sample) */
  promptTokens: number;
  /** of those, taken from the prefix cache instead of computed */
  reusedPromptTokens: number;
  /** token slots run through the model in prefill, padding included */
  prefillSlots: number;
  prefillChunks: number;
  /** forwards after the prefill */
  decodeSteps: number;
  /** Σ rows in the batch over those forwards: the decode compute spent */
  decodeRowSteps: number;
  generatedTokens: number;
  /** times finished rows were dropped from the cache */
  compactions: number;
}

/**
 * All samples of a call, flattened request-major: sample s holds tokens and log-probs
 * [sampleOffsets[s], sampleOffsets[s + 1]); finishReasons[s] is 1 eos, 2 stop, 3 length.
 */
export interface NativeGenerationOutput {
  tokens: Int32Array;
  /** log-prob of each sampled token under softmax(logits / temperature), before filtering */
  logprobs: Float32Array;
  sampleOffsets: Int32Array;
  finishReasons: Uint8Array;
  stats: GenerationStats;
}

/** Keys and values of the sequences of the last generate call it was passed to. */
export interface NativePrefixCache {
  /** sequences held (prompt + generated tokens of each sample) */
  readonly sequences: number;
  readonly tokens: number;
  /** bytes of keys and values held */
  readonly bytes: number;
  /** frees what it holds */
  clear(): void;
}

/** LoRA adapters as the engine takes them (lib/engine/lora.ts checks them). */
export interface NativeLoraConfig {
  rank: number;
  alpha: number;
  dropout: number;
  targetModules: string[];
  /** of the initialisation of A and of the dropout masks */
  seed: number;
}

export interface NativeModel {
  readonly disposed: boolean;
  readonly device: string;
  readonly dtype: string;
  readonly parameterBytes: number;
  /** logits [batch, length, vocab] fp32 */
  /** logits [batch, length, vocab], or with output "last" [batch, vocab] at each row's last real token; the array is engine memory (no copy) */
  forward(options: { inputIds: Int32Array; batch: number; length: number; positions?: Int32Array; keyValid?: Uint8Array; output?: "logits" | "last" }): Promise<Float32Array>;
  generate(requests: NativeGenerationRequest[], params: NativeSamplingParams, options: NativeGenerateOptions): Promise<NativeGenerationOutput>;
  createPrefixCache(): NativePrefixCache;
  parameters(): ParameterShape[];
  /** [batch, length] log p(token t | tokens < t), 0 at t = 0 and at padding; no gradient */
  sequenceLogprobs(options: { inputIds: Int32Array; batch: number; length: number; attentionMask: Uint8Array; temperature: number; chunkSize: number }): Promise<Float32Array>;
  /**
   * `header` is the full safetensors prefix; tensors (base parameters or adapter tensors, by name)
   * are written in `names` order as `dtypes`. `merged`: each base weight with its LoRA adapter merged in.
   */
  saveSafetensors(file: string, header: Buffer, names: string[], dtypes: string[], merged?: boolean): Promise<void>;
  /** LoRA adapters (native/core/lora.h) read from `records` (PEFT names), or freshly initialised without them; the base is frozen from then on */
  attachAdapters(config: NativeLoraConfig, records?: TensorRecord[]): Promise<void>;
  /** the same base weights, shared (not copied), with no adapters: the reference policy of a LoRA run */
  withoutAdapters(): Promise<NativeModel>;
  /** the LoRA tensors under their PEFT names, layer by layer (empty without LoRA) */
  adapterParameters(): ParameterShape[];
  /** the parameters (then adapter tensors) holding NaN or ±Inf values, with how many each holds, in Hugging Face order (empty: none) */
  nonFiniteParameters(): Promise<{ name: string; count: number }[]>;
  dispose(): void;
}

/** Policy-loss options of the fused op (docs/methods.md §4); absent keys take the defaults shown. */
export interface LossOptions {
  /** "token" (GRPO/PPO) | "sequence" (GSPO-token); default token */
  ratioLevel?: "token" | "sequence";
  /** ε_low, ε_high of the clipped surrogate; default 0.2 / 0.2 */
  clipLow?: number;
  clipHigh?: number;
  /** dual-clip constant c for A < 0 (0 = off) */
  dualClip?: number;
  /** default k3 */
  klEstimator?: "k1" | "k2" | "k3";
  /** β of the KL term on m_kl (0 = off) */
  klCoef?: number;
  /** entropy bonus coefficient (0 = off) */
  entropyCoef?: number;
  /** default token-mean */
  aggregation?: "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum" | "seq-mean-token-sum-norm";
}

/** Counts of the whole optimizer step that the aggregation divides by. */
export interface LossNormalizers {
  lossTokens: number;
  klTokens: number;
  sequences: number;
  /** the constant length of seq-mean-token-sum-norm (Dr.GRPO) */
  maxLength?: number;
}

/**
 * The loss statistics, in the engine's order: the names of OCTO_LOSS_STATS
 * (native/core/policy_loss.h, which says what each one sums).
 */
export const LOSS_STAT_KEYS = [
  "policyLoss",
  "klLoss",
  "entropyLoss",
  "lossTokens",
  "klTokens",
  "clippedTokens",
  "dualClippedTokens",
  "ratioSum",
  "klSum",
  "entropySum",
] as const;

/** Sums over a micro-batch's tokens (divide by the counts for means). */
export type LossStats = Record<(typeof LOSS_STAT_KEYS)[number], number>;

/** One right-padded micro-batch; per-token arrays are [batch * length], entry t concerns token t. */
export interface NativeMicroBatch {
  inputIds: Int32Array;
  batch: number;
  length: number;
  attentionMask: Uint8Array;
  lossMask: Float32Array;
  klMask: Float32Array;
  advantages: Float32Array;
  oldLogprobs: Float32Array;
  refLogprobs?: Float32Array;
}

export interface NativeTrainerOptions {
  maxGradNorm?: number;
  activationCheckpointing?: boolean;
  /** required: the default is LOGPROB_CHUNK_SIZE (0: from the op's memory budget) */
  logprobChunkSize: number;
  temperature?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** What one data-parallel gradient all-reduce did (Trainer.reduceGradients). */
export interface GradientReduceReport {
  /** spent in reduceGradients: launching the buckets not yet launched and waiting for all */
  seconds: number;
  buckets: number;
  /** buckets launched by the backward's hooks, overlapping it */
  bucketsDuringBackward: number;
  /** fp32 gradient bytes all-reduced (zero2/fsdp: entering the reduce-scatters, every micro-batch) */
  bytes: number;
  /** fsdp: parameter all-gathers inside the micro-batches (per layer, forward and backward), and their output bytes */
  gathers: number;
  gatherBytes: number;
}

/** Bytes a sharded trainer holds on this rank (native/core/parameter_shards.h ShardMemory). */
export interface ShardMemory {
  /** fp32 master shards */
  masterBytes: number;
  /** AdamW moments (of the shards) */
  optimizerBytes: number;
  /** fp32 gradient shards */
  gradientBytes: number;
  /** model-dtype parameter bytes held now (whole units, and fsdp's low-precision shards) */
  parameterBytes: number;
  /** fsdp: the most unit bytes gathered at once in the last step's micro-batches (the whole model is gathered again after it) */
  peakGatheredBytes: number;
  largestUnitBytes: number;
  units: number;
}

/** One entry of Trainer.stateTensors: sharded, this rank's part of a tensor, from element `start` of it flattened. */
export interface StateTensorShape extends ParameterShape {
  start?: number;
}

export interface NativeTrainer {
  /**
   * Data-parallel training over `group` (a collective: every rank calls it): rank 0's weights are
   * broadcast to all, and gradients are summed over the ranks in `bucketBytes` fp32 buckets.
   */
  enableDataParallel(group: NativeProcessGroup, options: { bucketBytes: number; overlapBackward: boolean; strategy?: "ddp" | "zero2" | "fsdp" }): Promise<void>;
  /** zero2/fsdp: the collectives of one micro-batch for a rank with fewer than another (they add nothing) */
  accumulatePadding(): Promise<void>;
  /** zero2/fsdp only */
  shardMemory(): Promise<ShardMemory>;
  /** `lastOfStep` (default true) marks the step's last micro-batch: data-parallel, its backward may start the all-reduce */
  accumulate(batch: NativeMicroBatch, objective: "policy" | "supervised", loss: LossOptions, normalizers: LossNormalizers, lastOfStep?: boolean): Promise<{ loss: number; finite: boolean; stats: LossStats }>;
  /** data-parallel: sums the step's gradients over the ranks; every rank, once per step, before step() or zeroGrad() */
  reduceGradients(): Promise<GradientReduceReport>;
  /** gatheredBytes / gatherSeconds: zero2/fsdp's all-gather of the updated parameters */
  step(lr: number): Promise<{ gradNorm: number; skipped: boolean; step: number; gatheredBytes: number; gatherSeconds: number }>;
  zeroGrad(): Promise<void>;
  /** optimizer state (AdamW moments; fp32 masters of bf16 models) that saveState writes, in order */
  stateTensors(): Promise<StateTensorShape[]>;
  saveState(file: string, header: Buffer): Promise<void>;
  /** a record with `start` holds elements [start, start + numel) of its flattened tensor (pieces of any sharding) */
  loadState(records: (TensorRecord & { start?: number })[], steps: number): Promise<void>;
}

export interface TokenLogprobsArgs {
  /** [tokens, hiddenSize], read in place (not copied): leave it unchanged until the promise settles */
  hidden: Float32Array;
  /**
   * LM head [vocabSize, hiddenSize]: a Float32Array read in place like `hidden`, or a model whose own
   * LM head is used (hidden then moves to the model's device and dtype)
   */
  weight: Float32Array | NativeModel;
  targets: Int32Array;
  tokens: number;
  hiddenSize: number;
  vocabSize: number;
  temperature?: number;
  /** tokens per chunk; default LOGPROB_CHUNK_SIZE (0: from the memory budget) */
  chunkSize?: number;
  /** bytes the op may allocate, its gradients included (0 or absent: its default budget) */
  memoryBudgetBytes?: number;
  withEntropy?: boolean;
  /** the unfused formula on full logits (the reference) */
  eager?: boolean;
  /** upstream gradients: when given, gradHidden (and gradWeight) are returned */
  gradLogprobs?: Float32Array;
  gradEntropy?: Float32Array;
  /** false: the LM head is frozen (no gradWeight; the op then never keeps nor recomputes logits); default true */
  lmHeadGrad?: boolean;
  /** [tokens, hiddenSize]: the fused op writes d/d hidden here instead of into a new array */
  gradHiddenOut?: Float32Array;
  /** [vocabSize, hiddenSize]: the fused op writes d/d weight here (fp32) instead of into a new array */
  gradWeightOut?: Float32Array;
}

/** How the fused op laid out one call (native/core/logprobs.h LogprobsPlan). */
export interface LogprobsPlan {
  chunkTokens: number;
  /**
   * how the backward gets the probabilities back: "projected" (head frozen: p·W from the forward),
   * "kept" (log p of every token kept), "recomputed" (each chunk's logits recomputed: one more head
   * GEMM), "none" (no gradient)
   */
  backward: "none" | "projected" | "kept" | "recomputed";
  budgetBytes: number;
  /** the most it holds at once beyond its inputs, as planned (chunk buffers, kept log p or projections, gradients) */
  workingBytes: number;
}

export interface TokenLogprobsResult {
  logprobs: Float32Array;
  entropy?: Float32Array;
  /** gradHiddenOut itself when it was given */
  gradHidden?: Float32Array;
  /** gradWeightOut itself when it was given */
  gradWeight?: Float32Array;
  /** fused op only */
  plan?: LogprobsPlan;
}

export interface PolicyLossArgs {
  logprobs: Float32Array;
  oldLogprobs: Float32Array;
  refLogprobs?: Float32Array;
  advantages: Float32Array;
  lossMask: Float32Array;
  klMask: Float32Array;
  sequenceIds: Int32Array;
  numSequences: number;
  entropy?: Float32Array;
  options: LossOptions;
  normalizers: LossNormalizers;
  eager?: boolean;
}

export interface PolicyLossResult {
  loss: number;
  /** fused op only */
  stats?: LossStats;
  gradLogprobs: Float32Array;
  gradEntropy?: Float32Array;
}

export interface NativeOps {
  tokenLogprobs(args: TokenLogprobsArgs & { chunkSize: number }): Promise<TokenLogprobsResult>;
  policyLoss(args: PolicyLossArgs): Promise<PolicyLossResult>;
  adamw(args: {
    params: Float32Array[];
    shapes: number[][];
    grads: Float32Array[][];
    lrs: number[];
    beta1?: number;
    beta2?: number;
    eps?: number;
    weightDecay?: number;
    /** libtorch's torch::optim::AdamW instead of ours */
    reference?: boolean;
  }): Promise<Float32Array[]>;
  /** bytes of tensors on `device` ("cpu": counted from the first call on; "cuda:N": libtorch's caching allocator) */
  /** cachedBytes: freed blocks kept for reuse (CPU: at most OCTO_NATIVE_CPU_CACHE_MB, default 256; CUDA: reserved, not allocated) */
  deviceMemory(device: string, options?: { resetPeak?: boolean }): { currentBytes: number; peakBytes: number; cachedBytes: number };
  benchPolicyLoss(args: {
    tokens: number;
    hiddenSize: number;
    vocabSize: number;
    /** 0: from the fused op's default memory budget */
    chunkSize: number;
    eager: boolean;
    lmHeadGrad: boolean;
    iterations: number;
    device?: string;
  }): Promise<{ seconds: number; peakBytes: number; loss: number; plan?: LogprobsPlan }>;
  /** the eager PyTorch baseline of `bench vs-eager`: a copy of `model`'s weights (not the product path) */
  EagerModel: new (model: NativeModel) => NativeEagerModel;
}

/**
 * A model computed as transformers' modeling_qwen3.py does in PyTorch eager (native/core/bench_kernels.h
 * EagerModel), on its own copy of a model's weights: the baseline `octo-native bench vs-eager` times.
 */
export interface NativeEagerModel {
  readonly parameterCount: number;
  /** `with torch.no_grad(): model(input_ids).logits`; the logits [batch, length, vocab] only with returnLogits */
  forward(options: { inputIds: Int32Array; batch: number; length: number; returnLogits?: boolean }): Promise<Float32Array | undefined>;
  /** forward, log_softmax + gather, the eager policy loss, backward, clip_grad_norm_, AdamW, zero_grad */
  trainStep(options: {
    inputIds: Int32Array;
    batch: number;
    length: number;
    attentionMask: Uint8Array;
    lossMask: Float32Array;
    advantages: Float32Array;
    oldLogprobs: Float32Array;
    klMask?: Float32Array;
    refLogprobs?: Float32Array;
    loss: LossOptions;
    optimizer: { lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; maxGradNorm?: number };
  }): Promise<{ loss: number; gradNorm: number }>;
  /** generate() with a DynamicCache over equal-length prompts [batch, length] (temperature 0: greedy): new tokens [batch, maxNewTokens] */
  generate(options: { promptIds: Int32Array; batch: number; length: number; temperature: number; topP: number; maxNewTokens: number; seed: number }): Promise<Int32Array>;
}

/** Where the ranks meet (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and how long they wait. */
export interface NativeProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** the rendezvous and every collective fail after this long without the other ranks */
  timeoutSeconds: number;
  /** "auto": nccl for a CUDA device, gloo otherwise */
  backend?: "auto" | "gloo" | "nccl";
  /** the device of the tensors it reduces (the model's); default cpu */
  device?: string;
}

/**
 * A c10d process group. Collectives pair up across ranks by call order: every rank must make
 * the same calls in the same order, one at a time.
 */
export interface NativeProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly backend: string;
  /** element-wise reduction over the ranks; `what` names the reduction in errors */
  allReduce(values: Float64Array, op: "sum" | "max" | "min", what: string): Promise<Float64Array>;
  barrier(what: string): Promise<void>;
  /** leaves the group (NCCL's communicators are freed); later collectives reject */
  shutdown(): void;
}

export interface EngineInfo {
  torchVersion: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  scaledDotProductAttention: boolean;
  /** optional features built in: sdpa, sdpa-gqa, cuda-graphs, gemm-out-dtype, gloo, nccl */
  features: string[];
  threads: number;
  parallelInfo: string;
  buildConfig: string;
}

export interface NativeAddon {
  loadModel(spec: ModelSpec, records: TensorRecord[], options: DeviceOptions): Promise<NativeModel>;
  createModel(spec: ModelSpec, seed: number, options: DeviceOptions): Promise<NativeModel>;
  expectedParameters(spec: ModelSpec): ParameterShape[];
  Trainer: new (model: NativeModel, options: NativeTrainerOptions) => NativeTrainer;
  /** joins a process group: resolves once all ranks have met, rejects after the timeout */
  createProcessGroup(options: NativeProcessGroupOptions): Promise<NativeProcessGroup>;
  /** the c10d backends this build has ("gloo"; "nccl" on a CUDA libtorch with NCCL) */
  distributedBackends(): string[];
  ops: NativeOps;
  info(): EngineInfo;
  /** intra-op threads of engine calls (default: OCTO_NATIVE_THREADS, OMP_NUM_THREADS or all cores) */
  setNumThreads(threads: number): void;
  /** seconds per [m, k] x [k, n] matmul (bench baseline) */
  /** seconds to pread a whole file into fresh memory (bench baseline) */
  timeFileRead(file: string): Promise<number>;
  timeMatmul(m: number, k: number, n: number, iterations: number, options: DeviceOptions): Promise<number>;
}


let addon: NativeAddon | undefined;

/** The loaded addon; the first call loads it and explains what to do when that fails. */
export function native(): NativeAddon {
  if (addon) return addon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    addon = require("node-gyp-build")(packageRoot) as NativeAddon;
    // libtorch's OpenMP default here can be 1 thread; use the cores we are given unless told.
    const threads = Number(process.env.OCTO_NATIVE_THREADS ?? process.env.OMP_NUM_THREADS ?? os.availableParallelism());
    if (Number.isInteger(threads) && threads > 0) addon.setNumThreads(threads);
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new Error(
      `octo-native: the native engine could not be loaded (${reason}).\n` +
        `  - Not built yet? Run 'npm run build:native' in ${packageRoot} (it finds or installs libtorch, then compiles).\n` +
        `  - libtorch moved or was removed? Rebuild the same way; 'node scripts/setup.js --find' shows which libtorch is used.\n` +
        `  - Built against a Python torch wheel? That wheel must still be installed where it was at build time.`,
    );
  }
  return addon;
}
