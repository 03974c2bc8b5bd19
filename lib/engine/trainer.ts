/**
 * Training steps on the native engine (docs/methods.md §2, §4): sequences in, one optimizer step out.
 *
 * A step takes ragged sequences, packs them into right-padded micro-batches, computes the
 * aggregation counts over the whole step (so k micro-batches give exactly the gradient of
 * one batch), accumulates gradients through the fused loss, then clips and applies AdamW.
 */
import fs from "node:fs";
import path from "node:path";

import { LOGPROB_CHUNK_SIZE, LOSS_STAT_KEYS, native, type GradientReduceReport, type LossNormalizers, type LossOptions, type LossStats, type NativeMicroBatch, type NativeTrainer, type ShardMemory, type TensorRecord } from "../native";
import { writeFileDurable } from "../util/atomic-file";
import { readRegularFile } from "../util/files";
import type { DataParallel } from "./distributed";
import { checkSchedule, learningRate, type LrSchedule } from "./lr-schedule";
import type { Model } from "./model";
import { buildSafetensorsHeader, readSafetensorsHeader } from "./safetensors";

/** One sequence (prompt + response). Per-token arrays are aligned with `tokens`: entry t concerns token t. */
export interface TrainSequence {
  tokens: Int32Array;
  /** 1 where token t gets the policy (or supervised) loss; entry 0 must be 0 */
  lossMask: ArrayLike<number>;
  /**
   * 1 where token t gets the KL penalty (default: the loss mask). Entries may also be per-token
   * coefficients ≥ 0 (SCoRe's β1/β2): the penalty of t is klCoef·klMask[t], normalised by the
   * COUNT of tokens with klMask > 0, so a 0/1 mask reads exactly as before. (seq-mean-token-mean
   * divides by each sequence's mask sum instead: use 0/1 masks with it.)
   */
  klMask?: ArrayLike<number>;
  /** the sequence advantage, or one per token (per-turn rewards) */
  advantage?: number | Float32Array;
  /** log π_old per token (policy objective) */
  oldLogprobs?: Float32Array;
  /** log π_ref per token (when klCoef != 0) */
  refLogprobs?: Float32Array;
}

export interface TrainerOptions {
  schedule: LrSchedule;
  /** AdamW */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** global-norm clip (0 = off; default 1) */
  maxGradNorm?: number;
  /** sequences per micro-batch (memory); the step's result does not depend on it */
  microBatchSize?: number;
  activationCheckpointing?: boolean;
  /** tokens per chunk of the log-prob op; default LOGPROB_CHUNK_SIZE (0: from the op's memory budget) */
  logprobChunkSize?: number;
  /** sampling temperature the log-probs are taken at */
  temperature?: number;
}

export interface StepOptions {
  objective: "policy" | "supervised";
  loss?: LossOptions;
  /** the constant of seq-mean-token-sum-norm (default: the longest sequence of the step) */
  maxLength?: number;
}

export interface StepReport {
  step: number;
  lr: number;
  loss: number;
  gradNorm: number;
  /** a non-finite loss or gradient, or an update that would make a weight or moment NaN/Inf: nothing was updated */
  skipped: boolean;
  stats: LossStats;
  /** derived means */
  clipFraction: number;
  meanRatio: number;
  meanKl: number;
  meanEntropy: number;
  /** tokens of the step's sequences (all ranks) */
  tokens: number;
  seconds: number;
  /** data-parallel: the step's communication */
  communication?: StepCommunication;
}

export interface StepCommunication {
  /** the gradient all-reduce (native: what was left after the backward, and the waits); zero2/fsdp: the reduce-scatters of every micro-batch (and fsdp's gathers) */
  gradients: GradientReduceReport;
  /** zero2/fsdp: the all-gather of the updated parameters after the optimizer step */
  parameters?: { bytes: number; seconds: number };
  /** the small reductions: step-wide counts before the loss, then loss statistics and the finite flag */
  countsSeconds: number;
  statsSeconds: number;
}

export type DataParallelStrategy = "ddp" | "zero2" | "fsdp";

export interface DataParallelTrainerOptions {
  /** gradient bucket size (fp32), MiB */
  bucketMegabytes: number;
  /** launch bucket all-reduces from the last backward's hooks, overlapping it */
  overlapBackward: boolean;
  /** ddp (default): every rank holds everything; zero2 / fsdp: sharded (docs/methods.md §13) */
  strategy?: DataParallelStrategy;
}

/** The sharded optimizer state of a run: which files hold the ranks' parts (PolicyTrainer.writeStateIndex). */
export interface ShardedStateIndex {
  format: typeof SHARDED_STATE_FORMAT;
  strategy: DataParallelStrategy;
  worldSize: number;
  step: number;
  /** one per rank, in rank order, relative to the index's directory */
  files: string[];
}

export const SHARDED_STATE_FORMAT = "octo-native-sharded-optimizer";

function emptyStats(): LossStats {
  return Object.fromEntries(LOSS_STAT_KEYS.map((key) => [key, 0])) as LossStats;
}

function sum(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return s;
}

function countPositive(values: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < values.length; i++) if (values[i] > 0) n++;
  return n;
}

/** Token ids in [0, vocabSize): the engine's embedding lookup fails on others without saying which sequence or position. */
function checkTokenIds(tokens: ArrayLike<number>, vocabSize: number, where: string): void {
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t];
    if (!(Number.isInteger(id) && id >= 0 && id < vocabSize))
      throw new RangeError(`${where}: token id ${id} at position ${t} is outside the model's vocabulary [0, ${vocabSize}); were the tokens made by another model's tokenizer?`);
  }
}

/** Sequences per micro-batch: a positive integer (0 would never advance through the batch). */
function checkMicroBatchSize(size: number | undefined): void {
  if (size !== undefined && !(Number.isInteger(size) && size > 0))
    throw new RangeError(`microBatchSize must be a positive integer (sequences per micro-batch), not ${size}`);
}

function validateSequence(s: TrainSequence, i: number, objective: StepOptions["objective"], needRef: boolean, vocabSize: number): void {
  const n = s.tokens.length;
  const where = `sequence ${i}`;
  if (n < 2) throw new RangeError(`${where}: needs at least 2 tokens`);
  checkTokenIds(s.tokens, vocabSize, where);
  const sameLength = (name: string, a: ArrayLike<number> | undefined) => {
    if (a !== undefined && a.length !== n) throw new RangeError(`${where}: ${name} has ${a.length} entries for ${n} tokens`);
  };
  sameLength("lossMask", s.lossMask);
  sameLength("klMask", s.klMask);
  sameLength("oldLogprobs", s.oldLogprobs);
  sameLength("refLogprobs", s.refLogprobs);
  if (typeof s.advantage !== "number") sameLength("advantage", s.advantage);
  if (s.lossMask[0] !== 0 || (s.klMask && s.klMask[0] !== 0))
    throw new RangeError(`${where}: token 0 has no prefix to predict it from; its lossMask/klMask entry must be 0`);
  if (objective === "policy" && !s.oldLogprobs) throw new RangeError(`${where}: the policy objective needs oldLogprobs (see PolicyTrainer.logprobs)`);
  if (needRef && !s.refLogprobs) throw new RangeError(`${where}: klCoef != 0 needs refLogprobs`);
}

/** Right-pads `sequences` into one native micro-batch. */
function packMicroBatch(sequences: TrainSequence[], useKl: boolean): NativeMicroBatch {
  const batch = sequences.length;
  const length = Math.max(...sequences.map((s) => s.tokens.length));
  const n = batch * length;
  const mb: NativeMicroBatch = {
    inputIds: new Int32Array(n),
    batch,
    length,
    attentionMask: new Uint8Array(n),
    lossMask: new Float32Array(n),
    klMask: new Float32Array(n),
    advantages: new Float32Array(n),
    oldLogprobs: new Float32Array(n),
    refLogprobs: useKl ? new Float32Array(n) : undefined,
  };
  sequences.forEach((s, b) => {
    const offset = b * length;
    mb.inputIds.set(s.tokens, offset);
    mb.attentionMask.fill(1, offset, offset + s.tokens.length);
    for (let t = 0; t < s.tokens.length; t++) {
      mb.lossMask[offset + t] = s.lossMask[t];
      mb.klMask[offset + t] = (s.klMask ?? s.lossMask)[t];
      mb.advantages[offset + t] = typeof s.advantage === "number" ? s.advantage : (s.advantage?.[t] ?? 0);
    }
    if (s.oldLogprobs) mb.oldLogprobs.set(s.oldLogprobs, offset);
    if (useKl && s.refLogprobs) mb.refLogprobs!.set(s.refLogprobs, offset);
  });
  return mb;
}

/** Trains one model: an AdamW optimizer with fp32 master weights, on the engine. */
export class PolicyTrainer {
  private readonly trainer: NativeTrainer;
  private stepsTaken = 0;
  private dataParallel?: DataParallel;
  private strategy: DataParallelStrategy = "ddp";

  constructor(readonly model: Model, readonly options: TrainerOptions) {
    checkSchedule(options.schedule);
    checkMicroBatchSize(options.microBatchSize);
    this.trainer = new (native().Trainer)(model.handle, {
      maxGradNorm: options.maxGradNorm ?? 1.0,
      activationCheckpointing: options.activationCheckpointing ?? false,
      logprobChunkSize: options.logprobChunkSize ?? LOGPROB_CHUNK_SIZE,
      temperature: options.temperature ?? 1.0,
      weightDecay: options.weightDecay ?? 0.01,
      beta1: options.beta1,
      beta2: options.beta2,
      eps: options.eps,
    });
  }

  get step(): number {
    return this.stepsTaken;
  }

  /**
   * Runs `work` as the model's next call, refused once the model is disposed: the native trainer
   * holds the weights itself, so it would otherwise go on training a model its owner freed.
   */
  private onLiveModel<T>(work: () => Promise<T>): Promise<T> {
    return this.model.exclusive(() => {
      if (this.model.handle.disposed) throw new Error("this model was disposed; load it again and make a new PolicyTrainer");
      return work();
    });
  }

  /**
   * Trains data-parallel from here on: every rank's weights become rank 0's, each trainStep
   * takes this rank's share of the step's sequences, and the update is the one of the combined
   * batch (counts and gradients summed over the ranks). A collective: every rank calls it.
   */
  async enableDataParallel(dataParallel: DataParallel, options: DataParallelTrainerOptions): Promise<void> {
    if (this.dataParallel) throw new Error("data-parallel training is already enabled on this trainer");
    if (!(options.bucketMegabytes > 0)) throw new RangeError("distributed.bucketMegabytes must be positive");
    const bucketBytes = Math.max(1, Math.round(options.bucketMegabytes * 2 ** 20));
    const strategy = options.strategy ?? "ddp";
    if (strategy !== "ddp" && this.stepsTaken > 0) throw new Error(`distributed.strategy ${strategy} must be enabled before the first step or state load`);
    await this.onLiveModel(() => this.trainer.enableDataParallel(dataParallel.group, { bucketBytes, overlapBackward: options.overlapBackward, strategy }));
    this.dataParallel = dataParallel;
    this.strategy = strategy;
  }

  get strategyName(): DataParallelStrategy {
    return this.strategy;
  }

  /** zero2/fsdp: each rank keeps 1/W of the optimizer state (and, fsdp, of the parameters) */
  get sharded(): boolean {
    return this.strategy !== "ddp";
  }

  /** What a sharded trainer holds on this rank (zero2/fsdp only). */
  memory(): Promise<ShardMemory> {
    if (!this.sharded) throw new Error("memory() reports a sharded trainer's bytes (distributed.strategy zero2 or fsdp)");
    return this.onLiveModel(() => this.trainer.shardMemory());
  }

  /**
   * log p(token t | tokens < t) for every token of every sequence (0 for token 0), without
   * gradient: the old log-probs of the policy, or the reference log-probs of a frozen model.
   */
  static logprobs(model: Model, sequences: Int32Array[], options: { microBatchSize?: number; temperature?: number; chunkSize?: number } = {}): Promise<Float32Array[]> {
    return model.exclusive(() => PolicyTrainer.sequenceLogprobs(model, sequences, options));
  }

  private static async sequenceLogprobs(model: Model, sequences: Int32Array[], options: { microBatchSize?: number; temperature?: number; chunkSize?: number }): Promise<Float32Array[]> {
    checkMicroBatchSize(options.microBatchSize);
    sequences.forEach((s, i) => checkTokenIds(s, model.spec.vocabSize, `sequence ${i}`));
    const size = options.microBatchSize ?? 8;
    const out: Float32Array[] = [];
    for (let start = 0; start < sequences.length; start += size) {
      const group = sequences.slice(start, start + size);
      const length = Math.max(...group.map((s) => s.length));
      const ids = new Int32Array(group.length * length);
      const mask = new Uint8Array(group.length * length);
      group.forEach((s, b) => {
        ids.set(s, b * length);
        mask.fill(1, b * length, b * length + s.length);
      });
      const lp = await model.handle.sequenceLogprobs({
        inputIds: ids,
        batch: group.length,
        length,
        attentionMask: mask,
        temperature: options.temperature ?? 1.0,
        chunkSize: options.chunkSize ?? LOGPROB_CHUNK_SIZE,
      });
      group.forEach((s, b) => out.push(lp.slice(b * length, b * length + s.length)));
    }
    return out;
  }

  /**
   * Writes the optimizer state (AdamW moments, fp32 masters of low-precision models, the step
   * count) as one safetensors file; with the model's own save it is all a resumed run needs.
   */
  saveState(file: string): Promise<void> {
    return this.onLiveModel(async () => {
      const shapes = await this.trainer.stateTensors();
      const tensors = shapes.map((t) => ({ name: t.name, shape: t.shape, dtype: "F32" }));
      const metadata: Record<string, string> = { format: "octo-native-optimizer", step: String(this.stepsTaken) };
      // Sharded: this rank's part of each tensor, and where in the tensor it starts.
      if (this.sharded && this.dataParallel) {
        metadata.rank = String(this.dataParallel.rank);
        metadata.worldSize = String(this.dataParallel.worldSize);
        metadata.starts = JSON.stringify(Object.fromEntries(shapes.map((t) => [t.name, t.start ?? 0])));
      }
      await this.trainer.saveState(file, buildSafetensorsHeader(tensors, metadata));
    });
  }

  /**
   * Zero2/fsdp: the index of the ranks' state files (each written by its rank with saveState) that
   * loadState reads back, at this world size or another one (the state is re-sharded).
   */
  static writeStateIndex(file: string, index: Omit<ShardedStateIndex, "format">): void {
    writeFileDurable(file, JSON.stringify({ format: SHARDED_STATE_FORMAT, ...index }, null, 2) + "\n");
  }

  /** The files and step of a sharded state index, checked (also what checkpoint validation reads). */
  static readStateIndex(file: string): ShardedStateIndex & { paths: string[] } {
    let index: ShardedStateIndex;
    try {
      index = JSON.parse(readRegularFile(file, "utf8"));
    } catch (error) {
      throw new Error(`${file}: not a readable JSON index of optimizer shards (${(error as Error).message})`);
    }
    if (index?.format !== SHARDED_STATE_FORMAT || !Array.isArray(index.files) || index.files.length !== index.worldSize || !Number.isInteger(index.step))
      throw new Error(`${file}: not an index of optimizer shards (format ${SHARDED_STATE_FORMAT}, one file per rank)`);
    const paths = index.files.map((f) => {
      if (typeof f !== "string" || f.includes("/") || f.includes("\\")) throw new Error(`${file}: shard names must be file names in its directory, not ${JSON.stringify(f)}`);
      const p = path.join(path.dirname(file), f);
      if (!fs.existsSync(p)) throw new Error(`${file}: names ${f}, which is missing; the checkpoint is incomplete`);
      return p;
    });
    return { ...index, paths };
  }

  /**
   * Restores what saveState wrote, into a trainer of a model loaded from the same checkpoint: one
   * file, or the index of a sharded run's files (any world size and strategy: each rank reads the
   * parts it owns; a replicated trainer assembles whole tensors).
   */
  async loadState(file: string): Promise<void> {
    const files = file.endsWith(".json") ? PolicyTrainer.readStateIndex(file).paths : [file];
    const indexStep = file.endsWith(".json") ? PolicyTrainer.readStateIndex(file).step : undefined;
    const records: (TensorRecord & { start?: number })[] = [];
    let steps = indexStep;
    for (const f of files) {
      const state = readSafetensorsHeader(f);
      const fileSteps = Number(state.metadata.step);
      if (!Number.isInteger(fileSteps) || fileSteps < 0) throw new Error(`${f}: no valid 'step' in its metadata; is it an optimizer state file?`);
      if (steps !== undefined && fileSteps !== steps) throw new Error(`${f}: holds the state of step ${fileSteps}, not ${steps} like the rest of ${file}`);
      steps = fileSteps;
      const starts = state.metadata.starts ? (JSON.parse(state.metadata.starts) as Record<string, number>) : undefined;
      for (const t of state.tensors) records.push(starts ? { ...t, start: starts[t.name] ?? 0 } : t);
    }
    await this.onLiveModel(() => this.trainer.loadState(records, steps!));
    this.stepsTaken = steps!;
  }

  /**
   * One optimizer step over `sequences`: the step's batch, or, data-parallel, this rank's share
   * of it (possibly none; every rank calls trainStep for every step).
   */
  trainStep(sequences: TrainSequence[], options: StepOptions): Promise<StepReport> {
    return this.onLiveModel(() => this.runStep(sequences, options));
  }

  private async runStep(sequences: TrainSequence[], options: StepOptions): Promise<StepReport> {
    const start = process.hrtime.bigint();
    const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
    const dp = this.dataParallel;
    if (sequences.length === 0 && !dp) throw new RangeError("trainStep needs at least one sequence");
    const loss = options.loss ?? {};
    const useKl = options.objective === "policy" && (loss.klCoef ?? 0) !== 0;
    sequences.forEach((s, i) => validateSequence(s, i, options.objective, useKl, this.model.spec.vocabSize));

    // Counts over the whole step (all ranks): what makes micro-batching and data parallelism exact.
    const normalizers: LossNormalizers = {
      lossTokens: sequences.reduce((n, s) => n + sum(s.lossMask), 0),
      klTokens: useKl ? sequences.reduce((n, s) => n + countPositive(s.klMask ?? s.lossMask), 0) : 0,
      sequences: sequences.length,
      maxLength: options.maxLength ?? Math.max(0, ...sequences.map((s) => s.tokens.length)),
    };
    const countsStart = process.hrtime.bigint();
    const microBatchSize = this.options.microBatchSize ?? Math.max(1, sequences.length);
    const ownMicroBatches = Math.ceil(sequences.length / microBatchSize);
    // zero2/fsdp reduce every micro-batch's gradients: every rank runs as many micro-batches.
    let microBatches = ownMicroBatches;
    if (dp) {
      [normalizers.lossTokens, normalizers.klTokens, normalizers.sequences] = await dp.sum(
        [normalizers.lossTokens, normalizers.klTokens, normalizers.sequences], "the step-wide loss counts");
      if (options.maxLength === undefined || this.sharded) {
        const [longest, most] = await dp.max([normalizers.maxLength!, ownMicroBatches], "the step's longest sequence and micro-batch count");
        if (options.maxLength === undefined) normalizers.maxLength = longest;
        if (this.sharded) microBatches = most;
      }
      if (normalizers.sequences === 0) throw new RangeError("trainStep needs at least one sequence on some rank");
    }
    const countsSeconds = seconds(countsStart);
    const stats = emptyStats();
    let totalLoss = 0;
    let finite = true;
    for (let k = 0; k < microBatches; k++) {
      if (k >= ownMicroBatches) {
        await this.trainer.accumulatePadding();
        continue;
      }
      const i = k * microBatchSize;
      const mb = packMicroBatch(sequences.slice(i, i + microBatchSize), useKl);
      const r = await this.trainer.accumulate(mb, options.objective, loss, normalizers, i + microBatchSize >= sequences.length);
      finite &&= r.finite;
      totalLoss += r.loss;
      for (const key of LOSS_STAT_KEYS) stats[key] += r.stats[key];
    }
    let tokens = sequences.reduce((n, s) => n + s.tokens.length, 0);
    let communication: StepCommunication | undefined;
    if (dp) {
      // Every rank, always, in this order: the gradient buckets (some perhaps already launched by
      // the backward), then the step's statistics with the agreement on finiteness.
      const gradients = await this.trainer.reduceGradients();
      const statsStart = process.hrtime.bigint();
      const totals = await dp.sum([totalLoss, tokens, finite ? 0 : 1, ...LOSS_STAT_KEYS.map((k) => stats[k])], "the step's loss statistics");
      [totalLoss, tokens] = totals;
      finite = totals[2] === 0;
      LOSS_STAT_KEYS.forEach((k, j) => (stats[k] = totals[3 + j]));
      communication = { gradients, countsSeconds, statsSeconds: seconds(statsStart) };
    }
    const lr = learningRate(this.options.schedule, this.stepsTaken);
    let gradNorm = NaN;
    let skipped = true;
    if (finite) {
      const r = await this.trainer.step(lr);
      gradNorm = r.gradNorm;
      skipped = r.skipped;
      if (communication && this.sharded) communication.parameters = { bytes: r.gatheredBytes, seconds: r.gatherSeconds };
    } else {
      await this.trainer.zeroGrad(); // a NaN/Inf loss: drop whatever the other micro-batches accumulated
    }
    if (!skipped) this.stepsTaken++;
    return {
      step: this.stepsTaken,
      lr,
      loss: totalLoss,
      gradNorm,
      skipped,
      stats,
      clipFraction: stats.lossTokens > 0 ? stats.clippedTokens / stats.lossTokens : 0,
      meanRatio: stats.lossTokens > 0 ? stats.ratioSum / stats.lossTokens : 0,
      meanKl: stats.klTokens > 0 ? stats.klSum / stats.klTokens : 0,
      meanEntropy: stats.lossTokens > 0 ? stats.entropySum / stats.lossTokens : 0,
      tokens,
      seconds: seconds(start),
      communication,
    };
  }
}
