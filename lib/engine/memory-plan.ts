/**
 * The memory planner (docs/methods.md §13): the bytes one GPU (one rank) holds to train a model
 * with our engine, from its config.json alone (no weights), per phase of an RL step:
 *
 *   rollout    the policy generates: its KV cache (native/core/sampler.cpp preallocates every row's
 *              slots) and, under fsdp, the full bf16 weights gathered for generation;
 *   log-probs  old and reference log-probs of the step's sequences, no gradient, one micro-batch at a time;
 *   training   forward + backward of a micro-batch (the activations autograd keeps, the fused
 *              log-prob op's workspace, the gradients as they arrive), then the AdamW step.
 *
 * What every phase also holds ("persistent"): the policy's weights, fp32 master weights, AdamW's m
 * and v, the fp32 main gradients and the frozen reference, each by the strategy's layout:
 *
 *   ddp    every rank holds everything (native/core/trainer.cpp, gradient_reducer.cpp);
 *   zero2  each rank keeps 1/W of the master weights, the Adam states and the gradients, the full
 *          weights in the model dtype, and a bucket of full gradients in flight;
 *   fsdp   the weights are sharded too; a decoder layer is gathered for its forward and again for
 *          its backward (the next one prefetched), and the full weights for the rollout.
 *
 * The byte counts of ddp follow the engine's allocations (each term names the code it mirrors) and
 * are checked against the CPU allocator's peak (test/memory-plan.test.ts); zero2 and fsdp follow
 * the layout above. Everything here is plain arithmetic on a ModelSpec: no addon, no weights.
 *
 * Shape letters as in native/core/model.h: B rows, T tokens per row, N = B·T, C hidden size,
 * H query heads, Hkv key/value heads, D head dim, I MLP width, V vocab, P parameters, W ranks.
 */
import type { ModelSpec } from "../native";
import { generationBytes } from "./sampling";

export const STRATEGIES = ["ddp", "zero2", "fsdp"] as const;
export type Strategy = (typeof STRATEGIES)[number];

export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

/**
 * How attention keeps its inputs for backward: "explicit" is the engine's own path where libtorch
 * has no scaled_dot_product_attention (1.13, the Debian CPU build: fp32 scores [B, H, T, T]); "sdpa"
 * its fused kernels (libtorch ≥ 2.0: no scores kept) with keys and values expanded to the query
 * heads; "sdpa-gqa" the same with enable_gqa (libtorch ≥ 2.5: no expansion). `octo-native info`
 * lists the build's features (sdpa, sdpa-gqa).
 */
export type AttentionKernel = "explicit" | "sdpa" | "sdpa-gqa";

export class MemoryPlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MemoryPlanError";
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes

const GIB = 2 ** 30;
const SIZE_UNITS: Readonly<Record<string, number>> = { "": 1, B: 1, KB: 2 ** 10, KIB: 2 ** 10, MB: 2 ** 20, MIB: 2 ** 20, GB: GIB, GIB: GIB, TB: 2 ** 40, TIB: 2 ** 40 };

/**
 * Bytes from "80GB", "80 GiB", "81559MiB" or a plain byte count. GB and GiB both mean 2^30 bytes, as
 * GPU memory is quoted: an "80 GB" H100 holds 80 GiB (nvidia-smi: 81559 MiB usable). `what` names the
 * option or key in the error.
 */
export function parseMemorySize(text: string | number, what: string): number {
  if (typeof text === "number") {
    if (Number.isFinite(text) && text > 0) return Math.floor(text);
    throw new MemoryPlanError(`${what}: ${text} is not a memory size; give bytes > 0 or a size like 80GB`);
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? SIZE_UNITS[match[2].toUpperCase()] : undefined;
  if (!match || unit === undefined || !(Number(match[1]) > 0))
    throw new MemoryPlanError(`${what}: '${text}' is not a memory size; write a number and a unit, e.g. 80GB, 79.6GiB or 81559MiB (GB = GiB = 2^30 bytes)`);
  return Math.floor(Number(match[1]) * unit);
}

/** "12.34 GiB" (3 decimals below 1 GiB). */
export function formatGiB(bytes: number): string {
  const gib = bytes / GIB;
  return `${gib.toFixed(Math.abs(gib) < 1 ? 3 : 2)} GiB`;
}

// ---------------------------------------------------------------------------------------------
// Parameters (native/core/model.cpp expectedParameters)

export interface ParameterCounts {
  total: number;
  /** one decoder layer's tensors */
  perLayer: number;
  embedding: number;
  /** 0 when tied to the embedding */
  lmHead: number;
  /** embedding, final norm and LM head: what is not in a decoder layer */
  outsideLayers: number;
}

/** The projections of a decoder layer: their input and output widths. */
function projectionShapes(spec: ModelSpec): Record<LoraModule, { in: number; out: number }> {
  const C = spec.hiddenSize, q = spec.numHeads * spec.headDim, kv = spec.numKvHeads * spec.headDim, I = spec.intermediateSize;
  return {
    q_proj: { in: C, out: q },
    k_proj: { in: C, out: kv },
    v_proj: { in: C, out: kv },
    o_proj: { in: q, out: C },
    gate_proj: { in: C, out: I },
    up_proj: { in: C, out: I },
    down_proj: { in: I, out: C },
  };
}

export function parameterCounts(spec: ModelSpec): ParameterCounts {
  const C = spec.hiddenSize, D = spec.headDim, I = spec.intermediateSize;
  const q = spec.numHeads * D, kv = spec.numKvHeads * D;
  const weights = Object.values(projectionShapes(spec)).reduce((n, p) => n + p.in * p.out, 0);
  const biases = (spec.attentionBias ? q + 2 * kv : 0) + (spec.outputBias ? C : 0) + (spec.mlpBias ? 2 * I + C : 0);
  const norms = 2 * C + (spec.qkNorm ? 2 * D : 0);
  const perLayer = weights + biases + norms;
  const embedding = spec.vocabSize * C;
  const lmHead = spec.tieWordEmbeddings ? 0 : spec.vocabSize * C;
  const outsideLayers = embedding + C + lmHead;
  return { total: outsideLayers + spec.numLayers * perLayer, perLayer, embedding, lmHead, outsideLayers };
}

/** Adapter parameters: A [r, in] and B [out, r] on every target module of every layer. */
export function loraParameterCount(spec: ModelSpec, rank: number, modules: readonly LoraModule[]): number {
  const shapes = projectionShapes(spec);
  return spec.numLayers * [...new Set(modules)].reduce((n, m) => n + rank * (shapes[m].in + shapes[m].out), 0);
}

// ---------------------------------------------------------------------------------------------
// The fused log-prob op's plan: native/core/logprobs.cpp planTokenLogprobs, line for line (the
// test compares the two). Bytes it holds beyond its inputs, its gradients included.

const FLOAT_BYTES = 4;
const LOGPROB_EAGER_PEAK_BUFFERS = 3;
const LOGPROB_FROZEN_HEAD_SHARE = 0.25;
const LOGPROB_TRAINED_HEAD_SHARE = 0.5;
const LOGPROB_BUDGET_CAP_BYTES = 2 * GIB;
const LOGPROB_MIN_CHUNK_TOKENS = 32;
const LOGPROB_FASTEST_CPU_CHUNK_TOKENS = 512;
const LOGPROB_PER_TOKEN_VECTOR_BYTES = 16 * FLOAT_BYTES;

export interface LogprobsPlanShape {
  tokens: number;
  hidden: number;
  vocab: number;
  /** bytes per element of the model dtype */
  elementBytes: number;
  cpu: boolean;
  hiddenGrad: boolean;
  lmHeadGrad: boolean;
  /** training.logprobChunkSize (0: from the budget) */
  chunkSize?: number;
  withEntropy?: boolean;
}

export interface PlannedLogprobs {
  chunkTokens: number;
  backward: "none" | "projected" | "kept" | "recomputed";
  budgetBytes: number;
  workingBytes: number;
}

function eagerLogprobsPeak(tokens: number, hidden: number, vocab: number, lmHeadGrad: boolean): number {
  const logits = tokens * vocab * FLOAT_BYTES;
  const gradients = (lmHeadGrad ? vocab * hidden * FLOAT_BYTES : 0) + tokens * hidden * FLOAT_BYTES;
  return Math.max(LOGPROB_EAGER_PEAK_BUFFERS * logits, logits + gradients);
}

export function planTokenLogprobs(s: LogprobsPlanShape): PlannedLogprobs {
  const { tokens, hidden, vocab, elementBytes } = s;
  const chunkSize = s.chunkSize ?? 0;
  const share = s.lmHeadGrad ? LOGPROB_TRAINED_HEAD_SHARE : LOGPROB_FROZEN_HEAD_SHARE;
  const budgetBytes = Math.floor(Math.min(share * eagerLogprobsPeak(tokens, hidden, vocab, s.lmHeadGrad), LOGPROB_BUDGET_CAP_BYTES));
  const rowBytes = vocab * FLOAT_BYTES;
  const lowRowBytes = elementBytes === FLOAT_BYTES ? 0 : vocab * elementBytes;
  const smallestChunk = chunkSize > 0 ? Math.min(chunkSize, tokens) : Math.min(tokens, LOGPROB_MIN_CHUNK_TOKENS);
  let fixedBytes = tokens * LOGPROB_PER_TOKEN_VECTOR_BYTES + (s.hiddenGrad ? tokens * hidden * elementBytes : 0);
  let chunkBuffers = 1;
  let backward: PlannedLogprobs["backward"];
  if (!s.hiddenGrad && !s.lmHeadGrad) {
    backward = "none";
  } else if (!s.lmHeadGrad) {
    backward = "projected";
    fixedBytes += tokens * hidden * FLOAT_BYTES * ((s.withEntropy ? 2 : 1) + 2);
  } else {
    chunkBuffers = s.withEntropy ? 2 : 1;
    fixedBytes += vocab * hidden * (FLOAT_BYTES + (elementBytes === FLOAT_BYTES ? 0 : elementBytes));
    const keptBytes = tokens * rowBytes;
    const keep = fixedBytes + keptBytes + smallestChunk * (chunkBuffers * rowBytes + lowRowBytes) <= budgetBytes;
    backward = keep ? "kept" : "recomputed";
    if (keep) fixedBytes += keptBytes;
  }
  const chunkBytesPerToken = chunkBuffers * rowBytes + lowRowBytes;
  const fitting = Math.trunc(Math.max(budgetBytes - fixedBytes, 0) / chunkBytesPerToken);
  let chosen = chunkSize;
  if (chosen === 0) {
    const fastest = s.cpu ? LOGPROB_FASTEST_CPU_CHUNK_TOKENS : fitting;
    const largest = Math.max(Math.min(fitting, fastest), smallestChunk);
    const chunks = Math.trunc((tokens + largest - 1) / Math.max(largest, 1));
    chosen = chunks > 0 ? Math.trunc((tokens + chunks - 1) / chunks) : 1;
  }
  const chunkTokens = Math.max(Math.min(chosen, tokens), 1);
  return { chunkTokens, backward, budgetBytes, workingBytes: fixedBytes + Math.min(chunkTokens, tokens) * chunkBytesPerToken };
}

// ---------------------------------------------------------------------------------------------
// Activations (native/core/model.cpp, what autograd keeps for backward)

interface ActivationShape {
  spec: ModelSpec;
  /** rows and tokens per row of the micro-batch (right-padded to its longest) */
  rows: number;
  tokens: number;
  /** bytes per element of the model dtype */
  a: number;
  attention: AttentionKernel;
  lora?: { rank: number; modules: readonly LoraModule[]; dropout: boolean };
}

/** Bytes one decoder layer keeps for its backward: up to the attention's residual, and the MLP's. */
interface LayerKept {
  attention: number;
  mlp: number;
}

/**
 * What one decoder layer keeps for its backward, per term of DecoderModel::layerForward. rmsNorm
 * keeps its normalised input and output (in a low-precision model also the fp32 copy of its input).
 */
function layerKeptBytes({ spec, rows: B, tokens: T, a, attention, lora }: ActivationShape): LayerKept {
  const N = B * T, C = spec.hiddenSize, I = spec.intermediateSize, H = spec.numHeads;
  const q = H * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  const fp32Copy = a === FLOAT_BYTES ? 0 : FLOAT_BYTES;
  const norm = (width: number) => N * width * (fp32Copy + 2 * a);
  let att = norm(C); // input_layernorm
  att += (q + 2 * kv) * C * a; // q/k/v weights concatenated for one GEMM, kept by it
  att += N * (q + 2 * kv) * a; // the q/k/v projections (q and k views keep it whole)
  if (spec.qkNorm) att += norm(q) + norm(kv); // Qwen3's per-head q/k RMSNorm
  att += N * (q + kv) * a; // RoPE's rotate_half(q) and rotate_half(k)
  if (attention === "explicit") {
    att += N * q * a; // the scaled queries, copied into the score GEMM's batch layout
    att += 2 * N * q * a; // keys and values expanded to the query heads (broadcast matmul copies)
    att += B * H * T * T * (FLOAT_BYTES + (a === FLOAT_BYTES ? 0 : a)); // softmax probabilities (fp32, and in the model dtype)
    att += B * T * T; // the inverted padding mask of masked_fill_
    att += N * q * a; // the attention output, reshaped for o_proj
  } else {
    att += N * q * a + (attention === "sdpa-gqa" ? N * kv * a : 2 * N * q * a); // q, k after RoPE (k and v expanded without enable_gqa)
    att += N * q * a + B * H * T * FLOAT_BYTES; // the attention output and its log-sum-exp
  }
  att += N * C * a; // h = x + attention
  let mlp = norm(C); // post_attention_layernorm
  mlp += 4 * N * I * a; // gate, up, silu(gate), silu(gate) * up
  mlp += N * C * a; // the layer's output (the next layer's input)
  if (lora) {
    const shapes = projectionShapes(spec);
    for (const m of new Set(lora.modules)) {
      const kept = N * lora.rank * a + (lora.dropout ? N * shapes[m].in * a : 0); // x·Aᵀ (and the dropped-out x)
      if (m === "gate_proj" || m === "up_proj" || m === "down_proj") mlp += kept;
      else att += kept;
    }
  }
  return { attention: att, mlp };
}

/**
 * The most one layer holds during its backward beyond what the layers below it keep: the MLP's
 * backward with everything of the layer still kept, then attention's with the MLP's part freed,
 * each with the gradients flowing through it (the gradient of the layer's input and output).
 */
function layerBackwardPeak(shape: ActivationShape, kept: LayerKept): number {
  const { spec, rows: B, tokens: T, a, attention } = shape;
  const N = B * T, C = spec.hiddenSize, I = spec.intermediateSize, H = spec.numHeads, q = H * spec.headDim;
  const flowing = 2 * N * C * a;
  const mlpGrads = 3 * N * I * a; // d(silu·up), d silu, d up
  const attentionGrads = attention === "explicit" ? 2 * B * H * T * T * FLOAT_BYTES + 3 * N * q * a : 4 * N * q * a; // d probs, d scores (explicit); d q, d k, d v
  return flowing + Math.max(kept.attention + kept.mlp + mlpGrads, kept.attention + attentionGrads);
}

export interface MicroBatchActivations {
  /** everything the forward keeps for backward, activation checkpointing as asked */
  saved: number;
  withCheckpointing: number;
  withoutCheckpointing: number;
  /** what the forward keeps outside the decoder layers, and per layer */
  outside: number;
  perLayer: number;
  /** the most one layer holds in its backward (with checkpointing: its recompute and backward) beyond `perLayer` */
  layerBackward: number;
}

function microBatchActivations(shape: ActivationShape, selectedTokens: number, checkpointing: boolean): MicroBatchActivations {
  const { spec, rows: B, tokens: T, a } = shape;
  const N = B * T, C = spec.hiddenSize, L = spec.numLayers;
  const fp32Copy = a === FLOAT_BYTES ? 0 : FLOAT_BYTES;
  // Outside the layers: the embedding output (layer 0's input), RoPE's cos and sin [B, 1, T, D], the
  // final norm, the hidden states of the tokens the loss reads (kept by the log-prob op), the padding mask.
  const outside = N * C * a + 2 * N * spec.headDim * a + N * C * (fp32Copy + a) + selectedTokens * C * a + (shape.attention === "explicit" ? B * T * T : 0);
  const kept = layerKeptBytes(shape);
  const layer = kept.attention + kept.mlp;
  const layerInput = N * C * a; // all that a checkpointed layer keeps (CheckpointedLayer)
  const perLayer = checkpointing ? layerInput : layer;
  const backward = layerBackwardPeak(shape, kept); // the recompute keeps the layer whole again
  return {
    saved: outside + L * perLayer,
    withCheckpointing: outside + L * layerInput,
    withoutCheckpointing: outside + L * layer,
    outside,
    perLayer,
    layerBackward: checkpointing ? backward : backward - layer,
  };
}

/**
 * What a no-gradient forward holds at once inside one decoder layer (inference mode frees every
 * intermediate once used): the residual stream, the q/k/v weights and projections, then the larger
 * of attention's and the MLP's temporaries.
 */
function inferenceLayerBytes({ spec, rows: B, tokens: T, a, attention }: ActivationShape): number {
  const N = B * T, C = spec.hiddenSize, I = spec.intermediateSize, H = spec.numHeads;
  const q = H * spec.headDim, kv = spec.numKvHeads * spec.headDim;
  const common = 3 * N * C * a + (q + 2 * kv) * C * a;
  const attentionBytes = N * (q + 2 * kv) * a + (attention === "explicit" ? 3 * N * q * a + 2 * B * H * T * T * FLOAT_BYTES : 2 * N * q * a);
  const mlp = 2 * N * I * a + N * C * a;
  return common + Math.max(attentionBytes, mlp);
}

// ---------------------------------------------------------------------------------------------
// The plan

export interface MemoryPlanInput {
  spec: ModelSpec;
  device: "cuda" | "cpu";
  /** the compute dtype: bfloat16 (CUDA's default) or float32 (CPU) */
  dtype: "bfloat16" | "float32";
  attention: AttentionKernel;
  /** ranks the run trains on (W) */
  worldSize: number;
  strategy: Strategy;
  lora?: { rank: number; targetModules: readonly LoraModule[]; dropout?: number };
  /** a frozen reference model is loaded (methodNeedsReference) */
  reference: boolean;
  rollout: {
    /** rows of this rank's generate call: its prompts × samples per prompt */
    rows: number;
    /** samples per prompt (rows come in groups of it) */
    samplesPerPrompt?: number;
    /** the longest prompt (tokens) */
    promptTokens: number;
    maxNewTokens: number;
    /**
     * a second turn over the first's cached sequences (SCoRe): prompt + turn 1 + this many tokens of
     * instruction, then maxNewTokens more; the first turn's keys and values stay cached meanwhile
     */
    secondTurnInstructionTokens?: number;
  };
  training: {
    microBatchSize: number;
    /** tokens of the longest training sequence (prompt + response) */
    sequenceTokens: number;
    /** tokens per sequence that take the loss or the KL (the log-prob op's tokens) */
    lossTokens: number;
    /** micro-batches of one optimizer step on this rank */
    microBatchesPerStep: number;
    activationCheckpointing: boolean;
    logprobChunkSize: number;
    entropy: boolean;
  };
  /** the gradient bucket (distributed.bucketMegabytes) */
  bucketBytes: number;
  /** an engine-backed judge (Trust-GRPO): its weights, and its generate call's KV cache */
  judge?: { spec: ModelSpec; rows: number; promptTokens: number; maxNewTokens: number };
  /** memory of one GPU (CPU: of the host, per rank) */
  memoryBytes: number;
}

/** Bytes per GPU, by what holds them. */
export interface MemoryBreakdown {
  /** the policy's weights in the model dtype (LoRA: the frozen base and the adapters); fsdp: this rank's shard */
  weights: number;
  /** fp32 main gradients (zero2/fsdp: the shard), and the low-precision ones autograd makes during backward */
  gradients: number;
  /** fp32 master weights of a low-precision model (fp32 models train their own weights) */
  master: number;
  /** AdamW's m and v, fp32 */
  optimizer: number;
  /** the frozen reference model (LoRA: none, the base with adapters disabled) */
  reference: number;
  /** an engine-backed judge model */
  judge: number;
  /** the activations one micro-batch keeps for backward, as configured */
  activations: number;
  activationsWithCheckpointing: number;
  activationsWithoutCheckpointing: number;
  /** the fused log-prob op in training: its chunk buffers, kept log-probs, LM-head gradient */
  logprobWorkspace: number;
  /** the rollout's KV cache and sampling state (every row's slots, preallocated) */
  kvCache: number;
  /** the copy a compaction makes of the rows still running, before the old cache is freed */
  kvCompaction: number;
  /** fsdp: weights gathered for the rollout, and layers gathered in forward and backward */
  gatheredWeights: number;
  /** AdamW's step: sqrt(v) of every parameter this rank updates */
  optimizerStep: number;
  /** CUDA context, cuBLAS/NCCL workspaces, allocator slack */
  runtimeReserve: number;
}

export type Phase = "rollout" | "logprobs" | "training";

export interface MemoryPlan {
  fits: boolean;
  /** the most bytes a GPU holds at once: the largest phase */
  bytesPerGpu: number;
  memoryBytes: number;
  peakPhase: Phase;
  phases: Record<Phase, number>;
  breakdown: MemoryBreakdown;
  /** the largest training.microBatchSize at which the training phase fits (0: not even 1) */
  largestMicroBatch: number;
  /** the most rows this rank's rollout (generate call) may have for its phase to fit, at the same lengths */
  largestRolloutRows: number;
  parameters: { total: number; trainable: number };
  input: MemoryPlanInput;
}

/** CUDA context (~0.5 GiB), cuBLAS and NCCL workspaces, the caching allocator's rounding: not tensors. */
const CUDA_RUNTIME_RESERVE = 1.5 * GIB;
/** The sampler compacts its cache once fewer than 3/4 of its rows run (sampler.cpp): a copy of up to 3/4 of it. */
const KV_COMPACTION_SHARE = 0.75;
/** Prompt tokens per prefill forward (GenerateOptions.prefillChunkTokens' default) and its attention cap (sampler.cpp). */
const PREFILL_CHUNK_TOKENS = 8192;
const PREFILL_ATTENTION_BYTES = 2 ** 28;

function checkInput(input: MemoryPlanInput): void {
  const positive = (value: number, what: string) => {
    if (!(Number.isInteger(value) && value >= 1)) throw new MemoryPlanError(`${what} must be a positive integer, not ${value}`);
  };
  positive(input.worldSize, "the number of GPUs (--nproc)");
  positive(input.training.microBatchSize, "training.microBatchSize");
  positive(input.training.sequenceTokens, "the training sequence length");
  positive(input.rollout.rows, "the rollout rows");
  positive(input.rollout.maxNewTokens, "rollout.maxNewTokens");
  if (input.lora) positive(input.lora.rank, "the LoRA rank");
  if (!(input.memoryBytes > 0)) throw new MemoryPlanError(`the GPU memory must be positive, not ${input.memoryBytes}`);
}

/** The per-GPU plan of a training run. */
export function planMemory(input: MemoryPlanInput): MemoryPlan {
  checkInput(input);
  const { spec, worldSize: W, strategy, training, rollout } = input;
  const a = input.dtype === "bfloat16" ? 2 : FLOAT_BYTES;
  const lowPrecision = a !== FLOAT_BYTES;
  const counts = parameterCounts(spec);
  const adapters = input.lora ? loraParameterCount(spec, input.lora.rank, input.lora.targetModules) : 0;
  // Trainable: every weight, or only the adapters; LoRA keeps the base frozen in the model dtype.
  const trainable = input.lora ? adapters : counts.total;
  const modelParameters = counts.total + adapters;
  const shard = (n: number) => (strategy === "ddp" ? n : Math.ceil(n / W));
  const weightShard = (n: number) => (strategy === "fsdp" ? Math.ceil(n / W) : n);
  const cpu = input.device === "cpu";

  // --- what every phase holds ---
  const weights = weightShard(modelParameters) * a;
  const master = lowPrecision ? shard(trainable) * FLOAT_BYTES : 0;
  const optimizer = 2 * shard(trainable) * FLOAT_BYTES;
  // fp32 main gradients that outlive a step: ddp's reducer buckets (W > 1), a low-precision model's
  // main gradients (one process), the shard of zero2/fsdp. One fp32 process keeps its gradients in
  // .grad only while it trains.
  const dataParallel = W > 1;
  const keptGradients = strategy !== "ddp" ? shard(trainable) * FLOAT_BYTES : dataParallel || lowPrecision ? trainable * FLOAT_BYTES : 0;
  // The reference has the policy's layout (fsdp: sharded the same way); LoRA disables the adapters instead.
  const reference = input.reference && !input.lora ? weightShard(counts.total) * a : 0;
  const judgeBytes = input.judge ? parameterCounts(input.judge.spec).total * a : 0;
  const runtimeReserve = cpu ? 0 : CUDA_RUNTIME_RESERVE;
  const persistent = weights + master + optimizer + keptGradients + reference + judgeBytes + runtimeReserve;

  // --- rollout ---
  const c10Dtype = lowPrecision ? "BFloat16" : "Float";
  const generation = (genSpec: ModelSpec, rows: number, promptTokens: number, maxNewTokens: number) => {
    const kv = generationBytes(genSpec, c10Dtype, { rows, longestPrompt: promptTokens, maxNewTokens, kvCache: true });
    const slots = rows * (promptTokens + maxNewTokens - 1) * genSpec.numLayers * 2 * genSpec.numKvHeads * genSpec.headDim * a;
    const prefillTokens = Math.min(PREFILL_CHUNK_TOKENS, Math.max(promptTokens, 1));
    const prefill = inferenceLayerBytes({ spec: genSpec, rows: 1, tokens: prefillTokens, a, attention: "sdpa-gqa" }) + Math.min(PREFILL_ATTENTION_BYTES, prefillTokens * prefillTokens * 5);
    return { kv, compaction: Math.ceil(KV_COMPACTION_SHARE * slots), prefill };
  };
  const policyRollout = (rows: number) => {
    const turn1 = generation(spec, rows, rollout.promptTokens, rollout.maxNewTokens);
    let kv = turn1.kv, compaction = turn1.compaction;
    if (rollout.secondTurnInstructionTokens !== undefined) {
      // SCoRe's turn 2 runs while turn 1's sequences stay in the prefix cache (views of its cache).
      const turn2 = generation(spec, rows, rollout.promptTokens + rollout.maxNewTokens + rollout.secondTurnInstructionTokens, rollout.maxNewTokens);
      kv += turn2.kv;
      compaction = Math.max(compaction, turn2.compaction);
    }
    return { kv, compaction, work: turn1.prefill };
  };
  const judgeGeneration = input.judge ? generation(input.judge.spec, input.judge.rows, input.judge.promptTokens, input.judge.maxNewTokens) : undefined;
  const rolloutGathered = strategy === "fsdp" ? modelParameters * a : 0; // the full weights, gathered for generation
  const rolloutPhaseAt = (rows: number) => {
    const r = policyRollout(rows);
    const judgeCall = judgeGeneration ? judgeGeneration.kv + judgeGeneration.compaction + judgeGeneration.prefill : 0;
    return persistent + rolloutGathered + Math.max(r.kv + r.compaction + r.work, judgeCall);
  };
  const { kv: kvCache, compaction: kvCompaction } = policyRollout(rollout.rows);
  const rolloutPhase = rolloutPhaseAt(rollout.rows);

  // --- training ---
  const fsdpGathered = strategy === "fsdp" ? (counts.outsideLayers + 2 * counts.perLayer) * a : 0; // embedding/LM head, a layer and the prefetched next
  const trainingPhase = (microBatchSize: number) => {
    const rows = microBatchSize, tokens = training.sequenceTokens;
    const shape: ActivationShape = { spec, rows, tokens, a, attention: input.attention, lora: input.lora ? { rank: input.lora.rank, modules: input.lora.targetModules, dropout: (input.lora.dropout ?? 0) > 0 } : undefined };
    const selected = rows * Math.min(training.lossTokens, tokens - 1);
    const acts = microBatchActivations(shape, selected, training.activationCheckpointing);
    const logprobs = planTokenLogprobs({
      tokens: selected, hidden: spec.hiddenSize, vocab: spec.vocabSize, elementBytes: a, cpu,
      hiddenGrad: true, lmHeadGrad: !input.lora, chunkSize: training.logprobChunkSize, withEntropy: training.entropy,
    });
    // Gradients autograd makes in the model dtype during backward (fp32 models: the .grad they keep):
    // all of them in ddp; zero2 reduce-scatters them bucket by bucket; fsdp layer by layer.
    const layerTrainable = input.lora ? adapters / spec.numLayers : counts.perLayer;
    // The LM head's gradient, the log-prob op's and the first one made; with tied embeddings autograd
    // buffers it until the embedding's own backward, the very last, adds to it.
    const headGradient = input.lora ? 0 : (spec.vocabSize + 1) * spec.hiddenSize * a; // and the final norm's
    const tiedBuffer = spec.tieWordEmbeddings ? headGradient : 0;
    const fp32Accumulating = !lowPrecision && strategy === "ddp"; // .grad holds the step's sum (fp32: no fold into main gradients)
    const heldFromEarlierMicroBatches = fp32Accumulating && training.microBatchesPerStep > 1 ? trainable * a : 0;
    const gradientsInFlight = (layersDone: number, head: boolean) => {
      if (strategy === "zero2") return input.bucketBytes + (input.bucketBytes / FLOAT_BYTES) * a;
      if (strategy === "fsdp") return 2 * layerTrainable * (a + FLOAT_BYTES);
      if (heldFromEarlierMicroBatches > 0) return heldFromEarlierMicroBatches + (head ? tiedBuffer : 0);
      return layersDone * layerTrainable * a + (head ? headGradient : 0);
    };
    // The backward, from the loss down: the log-prob op's backward (everything still kept), then each
    // layer's (those below it kept, the gradients of those above it made), then the embedding's.
    const L = spec.numLayers;
    let backwardPeak = acts.saved + logprobs.workingBytes + gradientsInFlight(0, false);
    for (let l = L - 1; l >= 0; l--) {
      const below = acts.outside + (l + 1) * acts.perLayer; // layer l's own kept bytes included
      backwardPeak = Math.max(backwardPeak, below + acts.layerBackward + gradientsInFlight(L - 1 - l, true));
    }
    // The embedding's gradient (tied: and its sum with the buffered LM-head gradient, made before either is freed).
    const embeddingGradient = input.lora ? 0 : counts.embedding * a * (spec.tieWordEmbeddings ? 2 : 1);
    backwardPeak = Math.max(backwardPeak, acts.outside + gradientsInFlight(L, true) + embeddingGradient);
    // The step: sqrt(v) of every updated parameter, beside the gradients an fp32 process keeps in .grad.
    const optimizerStep = shard(trainable) * FLOAT_BYTES;
    const stepPeak = optimizerStep + (strategy === "ddp" && !lowPrecision && !dataParallel ? trainable * FLOAT_BYTES : 0);
    return {
      total: persistent + fsdpGathered + Math.max(backwardPeak, stepPeak),
      acts, logprobs, optimizerStep,
      transientGradients: Math.max(gradientsInFlight(L, true), stepPeak - optimizerStep),
    };
  };
  const train = trainingPhase(training.microBatchSize);

  // --- old and reference log-probs: no gradient, a micro-batch at a time ---
  const lpRows = training.microBatchSize, lpTokens = training.sequenceTokens;
  const lpShape: ActivationShape = { spec, rows: lpRows, tokens: lpTokens, a, attention: input.attention };
  const lpOp = planTokenLogprobs({ tokens: lpRows * (lpTokens - 1), hidden: spec.hiddenSize, vocab: spec.vocabSize, elementBytes: a, cpu, hiddenGrad: false, lmHeadGrad: false, chunkSize: training.logprobChunkSize });
  const lpHidden = 2 * lpRows * lpTokens * spec.hiddenSize * a; // the final hidden states, and those of the predicting tokens
  const logprobsPhase = persistent + fsdpGathered + Math.max(inferenceLayerBytes(lpShape), lpHidden + lpOp.workingBytes);

  const phases: Record<Phase, number> = { rollout: rolloutPhase, logprobs: logprobsPhase, training: train.total };
  const peakPhase = (Object.keys(phases) as Phase[]).reduce((best, p) => (phases[p] > phases[best] ? p : best), "training" as Phase);
  const bytesPerGpu = phases[peakPhase];

  // The largest micro-batch whose training phase (and log-prob pass) fits: the phases grow with it.
  const fitsAt = (mb: number) => {
    if (trainingPhase(mb).total > input.memoryBytes) return false;
    const shapeAt: ActivationShape = { ...lpShape, rows: mb };
    const op = planTokenLogprobs({ tokens: mb * (lpTokens - 1), hidden: spec.hiddenSize, vocab: spec.vocabSize, elementBytes: a, cpu, hiddenGrad: false, lmHeadGrad: false, chunkSize: training.logprobChunkSize });
    return persistent + fsdpGathered + Math.max(inferenceLayerBytes(shapeAt), 2 * mb * lpTokens * spec.hiddenSize * a + op.workingBytes) <= input.memoryBytes;
  };
  const largest = (fits: (n: number) => boolean) => {
    let n = 0;
    for (let step = 1 << 20; step >= 1; step >>= 1) if (fits(n + step)) n += step;
    return n;
  };
  const largestMicroBatch = largest(fitsAt);
  const largestRolloutRows = largest((rows) => rolloutPhaseAt(rows) <= input.memoryBytes);

  const breakdown: MemoryBreakdown = {
    weights,
    gradients: keptGradients + train.transientGradients,
    master,
    optimizer,
    reference,
    judge: judgeBytes,
    activations: train.acts.saved,
    activationsWithCheckpointing: train.acts.withCheckpointing,
    activationsWithoutCheckpointing: train.acts.withoutCheckpointing,
    logprobWorkspace: train.logprobs.workingBytes,
    kvCache,
    kvCompaction,
    gatheredWeights: Math.max(rolloutGathered, fsdpGathered),
    optimizerStep: train.optimizerStep,
    runtimeReserve,
  };
  return {
    fits: bytesPerGpu <= input.memoryBytes,
    bytesPerGpu,
    memoryBytes: input.memoryBytes,
    peakPhase,
    phases,
    breakdown,
    largestMicroBatch,
    largestRolloutRows,
    parameters: { total: modelParameters, trainable },
    input,
  };
}
