/**
 * Models on the native engine: load a Hugging Face directory, run it, save it back in the
 * same layout (docs/methods.md §2). Checkpoint problems are found here, before any byte is read, and
 * reported with the file and tensor they concern.
 */
import fs from "node:fs";
import path from "node:path";

import { native, type DeviceOptions, type ModelSpec, type NativeModel, type TensorRecord } from "../native";
import { syncDirectory, writeFileDurable } from "../util/atomic-file";
import { makeDirectory, readRegularFile } from "../util/files";
import { removeStaleStaging, stagingName } from "../util/staging";
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  adapterConfigJson,
  checkLoraSettings,
  inspectAdapter,
  isAdapterDir,
  readAdapterConfig,
  type Adapter,
  type LoraSettings,
} from "./lora";
import { configFromModelSpec, modelSpecFromConfig } from "./model-config";
import { buildSafetensorsHeader, DTYPE_BYTES, readSafetensorsHeader } from "./safetensors";
import {
  checkGenerationFits,
  resolveSamplingParams,
  type FinishReason,
  type GenerateOptions,
  type GenerationRequest,
  type GenerationResult,
  type GenerationStats,
  type PrefixCache,
  type SamplingParams,
} from "./sampling";

export class ModelLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelLoadError";
  }
}

const WEIGHTS_FILE = "model.safetensors";
const INDEX_FILE = "model.safetensors.index.json";
/** Files besides the weights that make a saved directory usable by transformers and vLLM. */
const COMPANION_FILES = ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"];
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);
/** native/core/sampler.h FinishReason codes. */
const FINISH_REASONS: Record<number, FinishReason> = { 1: "eos", 2: "stop", 3: "length" };
/** Tensors that old checkpoints carry but that are derived, not learned. */
const DERIVED_TENSOR = /\.rotary_emb\.inv_freq$/;

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readRegularFile(file, "utf8");
  } catch (error) {
    throw new ModelLoadError(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ModelLoadError(`${file}: not valid JSON (${(error as Error).message})`);
  }
}

/** The weight files of a model directory, in shard order. */
function weightFiles(dir: string): string[] {
  const indexPath = path.join(dir, INDEX_FILE);
  if (fs.existsSync(indexPath)) {
    const index = readJson(indexPath) as { weight_map?: unknown };
    if (!index || typeof index.weight_map !== "object" || index.weight_map === null)
      throw new ModelLoadError(`${indexPath}: has no 'weight_map' object`);
    const files = [...new Set(Object.values(index.weight_map as Record<string, unknown>))];
    const isShardName = (f: unknown) => typeof f === "string" && f.endsWith(".safetensors") && !f.includes("/") && !f.includes("\\");
    const bad = files.find((f) => !isShardName(f));
    if (bad !== undefined)
      throw new ModelLoadError(`${indexPath}: 'weight_map' names ${JSON.stringify(bad)}; values must be .safetensors file names in the same directory`);
    for (const f of files as string[])
      if (!fs.existsSync(path.join(dir, f))) throw new ModelLoadError(`${indexPath}: names shard '${f}', which is missing from ${dir}`);
    return (files as string[]).sort().map((f) => path.join(dir, f));
  }
  if (fs.existsSync(path.join(dir, WEIGHTS_FILE))) return [path.join(dir, WEIGHTS_FILE)];
  const pickles = fs.readdirSync(dir).filter((f) => /\.(bin|pt|pth|ckpt)$/.test(f));
  if (pickles.length > 0)
    throw new ModelLoadError(
      `${dir} holds only PyTorch pickle weights (${pickles.join(", ")}). octo-native never loads pickle files: they can run ` +
        `arbitrary code. Convert once with transformers: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`,
    );
  throw new ModelLoadError(`${dir} has no ${WEIGHTS_FILE} or ${INDEX_FILE}; a Hugging Face model directory needs one of them`);
}

export interface Checkpoint {
  dir: string;
  config: Record<string, unknown>;
  spec: ModelSpec;
  /** one record per model parameter, in Hugging Face order */
  records: TensorRecord[];
}

/** Reads and cross-checks config.json and every safetensors header of a model directory. */
export function inspectCheckpoint(dir: string): Checkpoint {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new ModelLoadError(`model directory '${dir}' does not exist (expected a Hugging Face directory with config.json and model.safetensors)`);
  const configPath = path.join(dir, "config.json");
  if (!fs.existsSync(configPath)) throw new ModelLoadError(`${dir} has no config.json; is it a Hugging Face model directory?`);
  const config = readJson(configPath) as Record<string, unknown>;
  const spec = modelSpecFromConfig(config, configPath);

  const found = new Map<string, TensorRecord>();
  for (const file of weightFiles(dir)) {
    for (const record of readSafetensorsHeader(file).tensors) {
      const previous = found.get(record.name);
      if (previous) throw new ModelLoadError(`tensor '${record.name}' appears in both ${previous.file} and ${record.file}`);
      found.set(record.name, record);
    }
  }
  const records: TensorRecord[] = [];
  for (const expected of native().expectedParameters(spec)) {
    const record = found.get(expected.name);
    if (!record)
      throw new ModelLoadError(`${dir}: tensor '${expected.name}' is missing; ${spec.architecture} with this config.json needs it`);
    if (record.shape.join() !== expected.shape.join())
      throw new ModelLoadError(
        `${record.file}: tensor '${record.name}' has shape [${record.shape}] but config.json implies [${expected.shape}] ` +
          `(does config.json belong to these weights?)`,
      );
    if (!FLOAT_DTYPES.has(record.dtype))
      throw new ModelLoadError(`${record.file}: tensor '${record.name}' is ${record.dtype}; parameters must be F32, F16, BF16 or F64`);
    records.push(record);
    found.delete(expected.name);
  }
  for (const [name, record] of found) {
    // A tied model may still carry a copy of the embedding as lm_head; transformers ignores it too.
    if (DERIVED_TENSOR.test(name) || (spec.tieWordEmbeddings && name === "lm_head.weight")) continue;
    throw new ModelLoadError(
      `${record.file}: unexpected tensor '${name}', not part of ${spec.architecture} with this config.json ` +
        `(does config.json belong to these weights?)`,
    );
  }
  return { dir, config, spec, records };
}

export interface ForwardOptions {
  positions?: Int32Array;
  attentionMask?: Uint8Array;
  /**
   * "logits" (default): [batch, length, vocab]. "last": [batch, vocab], the logits at each row's
   * last real token (the last 1 of `attentionMask`), with the LM head run for those positions only.
   */
  output?: "logits" | "last";
}

export interface LoadOptions extends DeviceOptions {
  /**
   * A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to put on the
   * base loaded from `dir`. Without it, a `dir` that is itself an adapter directory (a LoRA run's
   * checkpoint) is loaded onto the base its adapter_config.json names.
   */
  adapter?: string;
  /**
   * LoRA (docs/methods.md §14): fresh adapters on the base (A as PEFT initialises it, from `seed`;
   * B = 0), or, with an adapter, the settings it must match (its dropout then taken from here).
   */
  lora?: LoraSettings & { seed?: number };
}

export interface SaveOptions {
  /** largest shard in bytes before splitting into model-0000i-of-0000n files (default 5 GB, as transformers) */
  maxShardBytes?: number;
  /** safetensors dtype of every tensor; default: the dtype each tensor had when loaded (F32 for created models) */
  dtype?: "F32" | "BF16" | "F16";
  /**
   * Save into a directory that already holds files. Only the model's own files are replaced
   * (config.json, the weights and their index, the adapter files, the companion files); anything else stays.
   */
  overwrite?: boolean;
  /**
   * A LoRA model saves its adapter alone (PEFT's layout) unless `merged`: then the whole model in the
   * Hugging Face layout, each targeted weight W + (alpha / r) · B A in the base's dtype.
   */
  merged?: boolean;
}

/**
 * A model on the engine plus what is needed to save it back in the Hugging Face layout.
 *
 * Calls on one model run one after another in the order they were made, whole: a forward made
 * while a trainStep is in flight sees the weights after that step, never half of it. They may be
 * issued without awaiting; the engine runs them on its own thread (native/README.md, "Threads").
 */
export class Model {
  /** settles when the last call made on this model has finished */
  private tail: Promise<unknown> = Promise.resolve();
  /** calls made through exclusive() and not yet finished */
  private running = 0;

  private constructor(
    readonly handle: NativeModel,
    readonly spec: ModelSpec,
    readonly config: Record<string, unknown>,
    private readonly tensorDtypes: Map<string, string>,
    /** where companion files (tokenizer, generation config) are copied from on save; a LoRA model's base */
    readonly sourceDir: string | undefined,
    /** the LoRA adapters' settings (lib/engine/lora.ts), when it has adapters */
    readonly lora: LoraSettings | undefined,
  ) {}

  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    let baseDir = dir;
    let adapterDir = options.adapter;
    if (adapterDir === undefined && isAdapterDir(dir)) {
      const { baseModel } = readAdapterConfig(dir);
      if (baseModel === undefined)
        throw new ModelLoadError(`${dir} is a LoRA adapter whose ${ADAPTER_CONFIG_FILE} names no base_model_name_or_path: load it onto its base (Model.load(base, { adapter }), or octo-native merge --base)`);
      if (!fs.existsSync(path.join(baseModel, "config.json")))
        throw new ModelLoadError(`${dir} is a LoRA adapter of the base model '${baseModel}' (its ${ADAPTER_CONFIG_FILE}), which is not a model directory here: load it onto its base (Model.load(base, { adapter }), or octo-native merge --base)`);
      [baseDir, adapterDir] = [baseModel, dir];
    }
    const checkpoint = inspectCheckpoint(baseDir);
    // Everything is checked before any weight is read.
    const adapter = adapterDir !== undefined ? inspectAdapter(adapterDir, checkpoint.spec) : undefined;
    const lora = loraToAttach(adapter, options.lora);
    const handle = await native().loadModel(checkpoint.spec, checkpoint.records, options);
    const dtypes = new Map(checkpoint.records.map((r) => [r.name, r.dtype]));
    if (lora) await attachLora(handle, lora, options.lora?.seed ?? 0, adapter, dtypes);
    warnOfNonFiniteWeights(adapterDir ?? dir, await handle.nonFiniteParameters());
    return new Model(handle, checkpoint.spec, checkpoint.config, dtypes, baseDir, lora);
  }

  /** A model with fresh weights (normal(0, 0.02), norms at 1) from a spec, with fresh LoRA adapters when `lora` is given. */
  static async create(spec: ModelSpec, seed: number, options: DeviceOptions & { lora?: LoraSettings & { seed?: number } } = {}): Promise<Model> {
    const lora = loraToAttach(undefined, options.lora);
    const handle = await native().createModel(spec, seed, options);
    const dtypes = new Map(handle.parameters().map((p) => [p.name, "F32"]));
    if (lora) await attachLora(handle, lora, options.lora?.seed ?? 0, undefined, dtypes);
    return new Model(handle, spec, configFromModelSpec(spec), dtypes, undefined, lora);
  }

  /**
   * The base of a LoRA model with its adapters off: the same weights in memory (nothing copied), so
   * a LoRA run's reference policy costs no second model (docs/methods.md §14). Its calls are its own
   * (the base never changes, so they need no ordering against the LoRA model's).
   */
  async withoutAdapters(): Promise<Model> {
    if (!this.lora) throw new Error("withoutAdapters: this model has no LoRA adapters (load it with the lora or adapter option)");
    const view = await this.exclusive(() => this.handle.withoutAdapters());
    return new Model(view, this.spec, this.config, this.tensorDtypes, this.sourceDir, undefined);
  }

  get device(): string {
    return this.handle.device;
  }

  /**
   * Logits [batch, length, vocab] (fp32) for token ids [batch, length]. With padding, pass
   * `attentionMask` (1 = token, 0 = padding that nothing attends to) and the real
   * `positions`; by default positions are 0..length-1 in every row. The array is the engine's
   * own memory, not a copy. Token log-probs without the logits: PolicyTrainer.logprobs.
   */
  forward(inputIds: Int32Array, batch: number, length: number, options: ForwardOptions = {}): Promise<Float32Array> {
    if (!(Number.isInteger(batch) && batch > 0 && Number.isInteger(length) && length > 0))
      throw new RangeError(`batch and length must be positive integers (got ${batch}, ${length})`);
    const n = batch * length;
    if (inputIds.length !== n) throw new RangeError(`inputIds has ${inputIds.length} ids, expected batch*length = ${n}`);
    if (options.positions && options.positions.length !== n) throw new RangeError(`positions has ${options.positions.length} entries, expected ${n}`);
    if (options.attentionMask && options.attentionMask.length !== n)
      throw new RangeError(`attentionMask has ${options.attentionMask.length} entries, expected ${n}`);
    return this.exclusive(() =>
      this.handle.forward({ inputIds, batch, length, positions: options.positions, keyValid: options.attentionMask, output: options.output }),
    );
  }

  /**
   * Runs `work` (engine calls on this model, possibly several) after every call made on this
   * model before it has finished, and before any made after it starts. Model's own methods and
   * PolicyTrainer's go through it; `work` must not call them itself (it would wait for itself).
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    // Idle: start at once, so the engine call is queued before this returns (and a disposed
    // handle throws synchronously, as a plain handle call would).
    const run = this.running === 0 ? work() : this.tail.then(work, work);
    this.running++;
    const settled = () => {
      this.running--;
    };
    this.tail = run.then(settled, settled);
    return run;
  }

  /**
   * Samples `n` completions of each request's prompt (docs/methods.md §3): batched over one KV cache, each
   * prompt prefilled once for its n samples. Returns, per request, its n samples.
   */
  async generate(requests: GenerationRequest[], params: Partial<SamplingParams> = {}, options: GenerateOptions = {}): Promise<GenerationResult[][]> {
    return (await this.generateWithStats(requests, params, options)).results;
  }

  /** generate(), plus the counters of the call (tokens prefilled, reused, decoded; compactions). */
  async generateWithStats(
    requests: GenerationRequest[],
    params: Partial<SamplingParams> = {},
    options: GenerateOptions = {},
  ): Promise<{ results: GenerationResult[][]; stats: GenerationStats }> {
    if (!Array.isArray(requests))
      throw new TypeError(`generate: requests must be an array of {promptIds, n?, seed?}, not ${requests === null ? "null" : typeof requests}`);
    const resolved = resolveSamplingParams(params);
    const vocab = this.spec.vocabSize;
    for (const [i, r] of requests.entries()) {
      if (r === null || typeof r !== "object") throw new TypeError(`request ${i} must be an object {promptIds, n?, seed?}, not ${r === null ? "null" : typeof r}`);
      if (!(r.promptIds instanceof Int32Array)) throw new TypeError(`request ${i}: promptIds must be an Int32Array`);
      if (r.promptIds.length === 0) throw new RangeError(`request ${i} has an empty prompt`);
      const bad = r.promptIds.find((id) => id < 0 || id >= vocab);
      if (bad !== undefined) throw new RangeError(`request ${i}: token id ${bad} is outside the model's vocabulary [0, ${vocab})`);
      if (r.n !== undefined && (!Number.isInteger(r.n) || r.n < 1)) throw new RangeError(`request ${i}: n must be an integer >= 1, not ${r.n}`);
      if (r.seed !== undefined && (!Number.isSafeInteger(r.seed) || r.seed < 0))
        throw new RangeError(`request ${i}: seed must be a non-negative integer, not ${r.seed}`);
    }
    for (const [i, stop] of resolved.stopSequences.entries()) {
      const bad = stop.find((id) => id >= vocab);
      if (bad !== undefined) throw new RangeError(`stopSequences[${i}]: token id ${bad} is outside the model's vocabulary [0, ${vocab})`);
    }
    if (options.recompute && options.prefixCache) throw new TypeError("recompute runs without a KV cache, so it takes no prefixCache");
    // CPU: the memory free to this process (cgroup limits included). CUDA: the engine reads no free device memory yet.
    const availableBytes = this.device === "cpu" ? process.availableMemory() : undefined;
    const shape = {
      rows: requests.reduce((n, r) => n + (r.n ?? 1), 0),
      longestPrompt: requests.reduce((longest, r) => Math.max(longest, r.promptIds.length), 0),
      maxNewTokens: resolved.maxNewTokens,
      kvCache: !options.recompute,
    };
    checkGenerationFits(this.spec, this.handle.dtype, shape, availableBytes);
    const prefillChunkTokens = options.prefillChunkTokens ?? 8192;
    if (!Number.isSafeInteger(prefillChunkTokens) || prefillChunkTokens < 1)
      throw new RangeError(`prefillChunkTokens must be an integer >= 1, not ${prefillChunkTokens}`);
    const output = await this.exclusive(() => this.handle.generate(
      requests.map((r, i) => ({ promptIds: r.promptIds, samples: r.n ?? 1, seed: r.seed ?? resolved.seed + i })),
      {
        temperature: resolved.temperature,
        topP: resolved.topP,
        topK: resolved.topK,
        minP: resolved.minP,
        maxNewTokens: resolved.maxNewTokens,
        eosTokenIds: resolved.eosTokenIds,
        stopSequences: resolved.stopSequences.map((s) => Int32Array.from(s)),
      },
      {
        prefixCache: options.prefixCache,
        recompute: options.recompute ?? false,
        staticShapes: options.staticShapes ?? false,
        prefillChunkTokens,
      },
    ));
    // Views into the call's flat arrays: no copy per sample.
    let sample = 0;
    const results = requests.map((r) =>
      Array.from({ length: r.n ?? 1 }, () => {
        const start = output.sampleOffsets[sample], end = output.sampleOffsets[sample + 1];
        const finishReason = FINISH_REASONS[output.finishReasons[sample++]];
        return { tokens: output.tokens.subarray(start, end), logprobs: output.logprobs.subarray(start, end), finishReason };
      }),
    );
    return { results, stats: output.stats };
  }

  /** A prefix cache for generate({ prefixCache }) with this model (multi-turn continuation). */
  createPrefixCache(): PrefixCache {
    return this.handle.createPrefixCache();
  }

  /**
   * Writes config.json, the weights (sharded with an index past maxShardBytes) and the
   * source's companion files into `dir`, atomically: a temp directory renamed into place,
   * so an interrupted save never leaves a half-written model. A LoRA model writes its adapter
   * (adapter_config.json + adapter_model.safetensors, PEFT's layout) and the companion files,
   * or with `merged` the whole model with the adapters merged in.
   */
  save(dir: string, options: SaveOptions = {}): Promise<void> {
    return this.exclusive(() => (this.lora && !options.merged ? this.writeAdapter(dir, options) : this.writeCheckpoint(dir, options)));
  }

  /** Throws unless every weight (and adapter tensor) is finite. */
  private async checkFinite(dir: string): Promise<void> {
    const nonFinite = await this.handle.nonFiniteParameters();
    if (nonFinite.length > 0)
      throw new Error(
        `not saving ${dir}: ${describeNonFinite(nonFinite)}, and a checkpoint of such weights is unusable. ` +
          `They were there when the model was loaded (Model.load warns of them) or were written into it outside the trainer, which skips any step that would make one`,
      );
  }

  /** The staging directory of a save into `target` (checked first), removed again when `write` fails; then installed. */
  private async staged(target: string, options: SaveOptions, kind: "model" | "adapter", write: (staging: string) => Promise<void>): Promise<void> {
    checkSaveTarget(target, options.overwrite ?? false);
    removeStaleStaging(path.dirname(target), { locked: false, only: (name) => name.startsWith(`${path.basename(target)}.tmp-`) });
    const staging = stagingName(target, "tmp");
    makeDirectory(staging, "the model's staging directory");
    try {
      await write(staging);
      if (this.sourceDir && path.resolve(this.sourceDir) !== target)
        for (const f of COMPANION_FILES)
          if (fs.existsSync(path.join(this.sourceDir, f))) writeFileDurable(path.join(staging, f), readRegularFile(path.join(this.sourceDir, f)));
      syncDirectory(staging);
      installModelFiles(staging, target, kind);
    } catch (error) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw error;
    }
  }

  /** A LoRA model's adapter in PEFT's layout (lib/engine/lora.ts), which transformers and vLLM load onto the base. */
  private async writeAdapter(dir: string, options: SaveOptions): Promise<void> {
    await this.checkFinite(dir);
    const lora = this.lora!;
    await this.staged(path.resolve(dir), options, "adapter", async (staging) => {
      const tensors = this.handle.adapterParameters().map((p) => ({ ...p, dtype: options.dtype ?? this.tensorDtypes.get(p.name) ?? "F32" }));
      await this.handle.saveSafetensors(path.join(staging, ADAPTER_WEIGHTS_FILE), buildSafetensorsHeader(tensors), tensors.map((t) => t.name), tensors.map((t) => t.dtype));
      const baseModel = this.sourceDir !== undefined ? path.resolve(this.sourceDir) : undefined;
      writeFileDurable(path.join(staging, ADAPTER_CONFIG_FILE), JSON.stringify(adapterConfigJson(lora, baseModel), null, 2) + "\n");
    });
  }

  private async writeCheckpoint(dir: string, options: SaveOptions): Promise<void> {
    await this.checkFinite(dir);
    const maxShardBytes = options.maxShardBytes ?? 5 * 1024 ** 3;
    const merged = (options.merged ?? false) && this.lora !== undefined;
    await this.staged(path.resolve(dir), options, "model", async (staging) => {
      const tensors = this.handle.parameters().map((p) => {
        const dtype = options.dtype ?? this.tensorDtypes.get(p.name) ?? "F32";
        return { ...p, dtype, bytes: p.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype] };
      });
      const shards: (typeof tensors)[] = [[]];
      let shardBytes = 0;
      for (const t of tensors) {
        if (shardBytes > 0 && shardBytes + t.bytes > maxShardBytes) {
          shards.push([]);
          shardBytes = 0;
        }
        shards[shards.length - 1].push(t);
        shardBytes += t.bytes;
      }
      const weightMap: Record<string, string> = {};
      let totalSize = 0;
      for (const [i, shard] of shards.entries()) {
        const n = String(shards.length).padStart(5, "0");
        const name = shards.length === 1 ? WEIGHTS_FILE : `model-${String(i + 1).padStart(5, "0")}-of-${n}.safetensors`;
        const header = buildSafetensorsHeader(shard);
        // The engine fsyncs what it writes.
        await this.handle.saveSafetensors(path.join(staging, name), header, shard.map((t) => t.name), shard.map((t) => t.dtype), merged);
        for (const t of shard) {
          weightMap[t.name] = name;
          totalSize += t.bytes;
        }
      }
      if (shards.length > 1)
        writeFileDurable(path.join(staging, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
      const torchDtype = options.dtype === "BF16" ? "bfloat16" : options.dtype === "F16" ? "float16" : options.dtype === "F32" ? "float32" : this.config.torch_dtype;
      writeFileDurable(path.join(staging, "config.json"), JSON.stringify({ ...this.config, torch_dtype: torchDtype ?? "float32" }, null, 2) + "\n");
    });
  }

  /** Frees the weights once the engine calls already started finish; calls still waiting behind them are refused. */
  dispose(): void {
    this.handle.dispose();
  }
}

/** "tensor 'a' holds 3 NaN/Inf values (and 2 more tensors: 10 in all)" */
function describeNonFinite(found: { name: string; count: number }[]): string {
  const [first] = found;
  const total = found.reduce((n, t) => n + t.count, 0);
  const more = found.length > 1 ? ` (and ${found.length - 1} more tensors: ${total} in all)` : "";
  return `tensor '${first.name}' holds ${first.count} NaN/Inf values${more}`;
}

/** One stderr warning when a loaded model holds NaN or ±Inf weights: what it computes from them is not a number. */
function warnOfNonFiniteWeights(dir: string, found: { name: string; count: number }[]): void {
  if (found.length === 0) return;
  const listed = found.slice(0, 4).map((t) => `'${t.name}' (${t.count})`).join(", ") + (found.length > 4 ? `, and ${found.length - 4} more` : "");
  process.stderr.write(
    `octo-native: warning: ${dir}: ${found.length} tensor(s) hold NaN/Inf values: ${listed}. Outputs computed from them are NaN ` +
      `(generate and eval stop with an error when the logits are), and this model cannot be saved\n`,
  );
}

/** The weight files of a Hugging Face save: one file, or shards and their index. */
function isWeightsFile(name: string): boolean {
  return name === WEIGHTS_FILE || name === INDEX_FILE || /^model-\d{5}-of-\d{5}\.safetensors$/.test(name);
}

/** The files of the other kind of save, removed when a save of `kind` replaces a directory's model. */
function isOtherKindsFile(name: string, kind: "model" | "adapter"): boolean {
  return kind === "model" ? name === ADAPTER_CONFIG_FILE || name === ADAPTER_WEIGHTS_FILE : name === "config.json" || isWeightsFile(name);
}

/** The LoRA adapters Model.load / create attach: a checked adapter's settings (matching `requested`), or the requested fresh ones. */
function loraToAttach(adapter: Adapter | undefined, requested: LoraSettings | undefined): LoraSettings | undefined {
  if (requested) checkLoraSettings(requested, "the lora settings");
  if (!adapter) return requested && { rank: requested.rank, alpha: requested.alpha, dropout: requested.dropout, targetModules: [...requested.targetModules] };
  if (!requested) return adapter.settings;
  const a = adapter.settings;
  const sameModules = a.targetModules.length === requested.targetModules.length && requested.targetModules.every((m) => a.targetModules.includes(m));
  if (a.rank !== requested.rank || a.alpha !== requested.alpha || !sameModules)
    throw new ModelLoadError(
      `${adapter.dir}: the adapter has r = ${a.rank}, lora_alpha = ${a.alpha}, target_modules [${a.targetModules.join(", ")}] but the lora settings ask for ` +
        `rank ${requested.rank}, alpha ${requested.alpha}, targetModules [${requested.targetModules.join(", ")}]: make them agree`,
    );
  return { ...a, dropout: requested.dropout };
}

/** Puts adapters on a freshly loaded handle (read from `adapter`, or initialised); their save dtypes go into `dtypes`. */
async function attachLora(handle: NativeModel, lora: LoraSettings, seed: number, adapter: Adapter | undefined, dtypes: Map<string, string>): Promise<void> {
  try {
    await handle.attachAdapters({ ...lora, targetModules: [...lora.targetModules], seed }, adapter?.records);
  } catch (error) {
    handle.dispose();
    throw error;
  }
  // Fresh adapters are saved in the compute dtype (c10 names); the fp32 masters of a bf16 model go with the optimizer state.
  const fresh = ({ Float: "F32", BFloat16: "BF16", Half: "F16" } as Record<string, string>)[handle.dtype] ?? "F32";
  for (const r of adapter?.records ?? []) dtypes.set(r.name, r.dtype);
  if (!adapter) for (const p of handle.adapterParameters()) dtypes.set(p.name, fresh);
}

/** Throws unless a save into `dir` may go ahead: it is new or empty, or the caller asked to overwrite. */
export function checkSaveTarget(dir: string, overwrite: boolean): void {
  const target = path.resolve(dir);
  if (!fs.existsSync(target)) return;
  if (!fs.statSync(target).isDirectory()) throw new Error(`cannot save a model to ${target}: it exists and is not a directory`);
  const present = fs.readdirSync(target);
  if (present.length === 0 || overwrite) return;
  const shown = present.slice(0, 5).join(", ") + (present.length > 5 ? `, … (${present.length} in all)` : "");
  throw new Error(
    `cannot save a model to ${target}: the directory already holds ${shown}. ` +
      `Save to a new directory, or overwrite (the option overwrite: true, or --overwrite) to replace the model's own files there (config.json, weights, tokenizer); other files are kept`,
  );
}

/**
 * Puts the complete save in `staging` at `target`. A new target is one rename. An existing one
 * gets the new files renamed in one by one (each atomically; the weights before their index and
 * config.json, so the directory always loads whole old or whole new weights), then the weight
 * files of the earlier save that the new one does not have are removed. Other files are not touched.
 */
function installModelFiles(staging: string, target: string, kind: "model" | "adapter"): void {
  if (!fs.existsSync(target)) {
    makeDirectory(path.dirname(target), "the directory of the saved model");
    fs.renameSync(staging, target);
    syncDirectory(path.dirname(target));
    return;
  }
  const written = fs.readdirSync(staging);
  const order = (name: string) => (name === INDEX_FILE ? 1 : name === "config.json" ? 2 : 0);
  for (const name of [...written].sort((a, b) => order(a) - order(b))) fs.renameSync(path.join(staging, name), path.join(target, name));
  for (const name of fs.readdirSync(target))
    if (!written.includes(name) && (isWeightsFile(name) || isOtherKindsFile(name, kind))) fs.rmSync(path.join(target, name), { force: true });
  syncDirectory(target);
  fs.rmSync(staging, { recursive: true, force: true });
}
