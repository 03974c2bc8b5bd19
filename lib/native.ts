/**
 * The whole boundary to the C++ engine in one typed file (native/binding implements it).
 * TypeScript validates and shapes arguments before they cross; C++ computes.
 * Every heavy call returns a Promise and runs on libuv's thread pool.
 */
import os from "node:os";
import path from "node:path";

/** Model hyper-parameters as the engine takes them (made by lib/model-config.ts). */
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

export interface NativeModel {
  readonly disposed: boolean;
  readonly device: string;
  readonly dtype: string;
  readonly parameterBytes: number;
  /** logits [batch, length, vocab] fp32 */
  forward(inputIds: Int32Array, batch: number, length: number, positions?: Int32Array, keyValid?: Uint8Array): Promise<Float32Array>;
  generate(requests: NativeGenerationRequest[], params: NativeSamplingParams, options: NativeGenerateOptions): Promise<NativeGenerationOutput>;
  createPrefixCache(): NativePrefixCache;
  parameters(): ParameterShape[];
  /** `header` is the full safetensors prefix; tensors are written in `names` order as `dtypes`. */
  saveSafetensors(file: string, header: Buffer, names: string[], dtypes: string[]): Promise<void>;
  dispose(): void;
}

export interface EngineInfo {
  torchVersion: string;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  scaledDotProductAttention: boolean;
  threads: number;
  parallelInfo: string;
  buildConfig: string;
}

export interface NativeAddon {
  loadModel(spec: ModelSpec, records: TensorRecord[], options: DeviceOptions): Promise<NativeModel>;
  createModel(spec: ModelSpec, seed: number, options: DeviceOptions): Promise<NativeModel>;
  expectedParameters(spec: ModelSpec): ParameterShape[];
  info(): EngineInfo;
  /** intra-op threads of engine calls (default: OCTO_NATIVE_THREADS, OMP_NUM_THREADS or all cores) */
  setNumThreads(threads: number): void;
  /** seconds per [m, k] x [k, n] matmul (bench baseline) */
  /** seconds to pread a whole file into fresh memory (bench baseline) */
  timeFileRead(file: string): Promise<number>;
  timeMatmul(m: number, k: number, n: number, iterations: number, options: DeviceOptions): Promise<number>;
}

const packageRoot = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? "../.." : "..");

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
