/**
 * `octo-native train`: an RL run from a config (docs/methods.md §1, §9, §12). Writes the resolved
 * config, metrics.jsonl (one line per step), checkpoints and summary.json into the run
 * directory, which it locks; resumes from the newest valid checkpoint with the same config;
 * Ctrl-C or SIGTERM saves and exits cleanly. What survives which fault: docs/reliability.md.
 *
 * Data-parallel (docs/methods.md §13; torchrun's variables in the environment, as `--nproc` sets them):
 * every rank trains on its share of each step (lib/engine/distributed.ts), rank 0 alone writes, and
 * every decision that changes what the ranks do next (resume point, stop) is agreed on first.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { SingleBar } from "cli-progress";
import YAML from "yaml";

import { ensureDemoModel } from "../demo/model";
import { DataParallel, rankDevice, torchrunEnv } from "../engine/distributed";
import { isAdapterDir } from "../engine/lora";
import { Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { PolicyTrainer } from "../engine/trainer";
import { evaluateModel } from "../eval/evaluate";
import type { EvalMetrics } from "../eval/metrics";
import { createMethodHook, methodNeedsReference } from "../methods";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { native } from "../native";
import { writeReportAfterRun } from "../report";
import { writeFileAtomic } from "../util/atomic-file";
import { makeDirectory } from "../util/files";
import { removeStaleStaging } from "../util/staging";
import { checkpointDir, latestCheckpoint, optimizerStateFile, saveCheckpoint, saveShardedCheckpoint, type TrainerState } from "./checkpoint";
import { ConfigError, type RunConfig } from "./config";
import { checkResumeChanges, trainingSetFingerprint, type TrainingSetFingerprint } from "./config-change";
import { DataCursor, loadDataset, type Example } from "./data";
import { checkRunMemory } from "./memory-check";
import { appendMetrics, cutMetricsForResume, type MetricsLine } from "./metrics-log";
import { promptOptions } from "./prompts";
import { RunLock } from "./run-lock";
import { rlStep, type StepMetrics } from "./step";

export interface TrainOptions {
  resume?: boolean;
  /** resume even though the config or the training set changed (the old config is kept beside the new) */
  allowConfigChange?: boolean;
  /** examples to train on instead of data.train (the embedded demo) */
  examples?: Example[];
  /** examples to evaluate before, after and every run.evalEvery steps instead of data.eval */
  evalExamples?: Example[];
  /** stop (and save) after this many steps of this invocation, as Ctrl-C would; resume continues */
  stopAfterSteps?: number;
  /** one line per step on stderr even on a TTY (no progress bar) */
  plainProgress?: boolean;
  /** start even when the memory plan says the configuration does not fit its device (lib/rl/memory-check.ts) */
  skipMemoryCheck?: boolean;
  quiet?: boolean;
}

export interface TrainSummary {
  runDir: string;
  steps: number;
  skippedSteps: number;
  interrupted: boolean;
  /** the signal that stopped it (SIGINT or SIGTERM; absent for options.stopAfterSteps or a peer rank's signal) */
  stopSignal?: NodeJS.Signals;
  /** why the method ended the run before run.steps (SRT early stopping or collapse alarm) */
  stoppedEarly?: string;
  finalCheckpoint: string;
  seconds: number;
  evalBefore?: EvalMetrics;
  evalAfter?: EvalMetrics;
  lastStep?: StepMetrics;
}

/** What every phase of a run shares: its config and options, where it writes, its ranks, its log. */
interface RunContext {
  config: RunConfig;
  options: TrainOptions;
  runDir: string;
  metricsFile: string;
  /** the ranks, when data-parallel */
  dp?: DataParallel;
  /** rank 0 (or the only process): the one that writes */
  isMain: boolean;
  /** rank 0's hold on the run directory */
  lock?: RunLock;
  /** this rank's device */
  device: string;
  stopSignals: StopSignals;
  log: (line: string) => void;
}

/** The run's models: the policy, its tokenizer, the frozen reference when a KL term needs it. */
interface RunModels {
  modelDir: string;
  policy: Model;
  tokenizer: TextTokenizer;
  reference?: Model;
}

/** What the step loop starts from. */
interface LoopStart {
  models: RunModels;
  trainer: PolicyTrainer;
  state: TrainerState;
  cursor: DataCursor;
  examples: Example[];
  evalExamples?: Example[];
  evaluate: () => Promise<EvalMetrics | undefined>;
  /** from a checkpoint: the metrics lines up to its step, which the method's state is rebuilt from */
  resumedMetrics?: MetricsLine[];
}

/** Where the step loop ended. */
interface LoopEnd {
  state: TrainerState;
  lastStep?: StepMetrics;
  interrupted: boolean;
  stoppedEarly?: string;
  finalCheckpoint: string;
}

/** An RL run: the phases below, top to bottom. */
export async function runTraining(config: RunConfig, options: TrainOptions = {}): Promise<TrainSummary> {
  const started = Date.now();
  // Watched from the start: a scheduler's SIGTERM while the models load still ends in a clean stop.
  const isMain = (torchrunEnv()?.rank ?? 0) === 0;
  const log = (line: string) => !options.quiet && isMain && process.stderr.write(line + "\n");
  const stopSignals = watchStopSignals(log);
  let run: RunContext | undefined;
  try {
    run = await joinRun(config, options, stopSignals, log);
    return await trainJoined(run, started);
  } finally {
    run?.dp?.close();
    run?.lock?.release();
    stopSignals.dispose();
  }
}

async function trainJoined(run: RunContext, started: number): Promise<TrainSummary> {
  const modelDir = await demoModelOrPath(run);
  const { examples, evalExamples } = await loadRunData(run);
  const trainingSet = trainingSetFingerprint(examples);
  const resumeFrom = await resumePoint(run);
  await recordRunConfig(run, resumeFrom, trainingSet);
  const models = await loadModels(run, modelDir, resumeFrom);
  const { trainer, state, cursor, resumedMetrics } = await restoreOrStart(run, models.policy, trainingSet, resumeFrom);
  const evaluate = evaluator(run, models, evalExamples);
  const evalBefore = resumeFrom ? undefined : await evaluate();
  const end = await stepLoop(run, { models, trainer, state, cursor, examples, evalExamples, evaluate, resumedMetrics });
  // The last step's periodic evaluation already is the final one (same weights, greedy).
  const evalAfter = end.interrupted ? undefined : end.lastStep?.step === end.state.step && end.lastStep.eval ? end.lastStep.eval : await evaluate();
  const summary: TrainSummary = {
    runDir: run.runDir, steps: end.state.step, skippedSteps: end.state.skippedSteps, interrupted: end.interrupted, stopSignal: run.stopSignals.received(), finalCheckpoint: end.finalCheckpoint,
    stoppedEarly: end.stoppedEarly, seconds: (Date.now() - started) / 1000, evalBefore, evalAfter, lastStep: end.lastStep,
  };
  await finishRun(run, models, summary);
  return summary;
}

/** Joins the ranks (data-parallel), checks the method runs on them, and takes the run directory (rank 0): its lock, stale staging removed. */
async function joinRun(config: RunConfig, options: TrainOptions, stopSignals: StopSignals, log: (line: string) => void): Promise<RunContext> {
  const runDir = path.resolve(config.run.dir);
  const rankEnv = torchrunEnv();
  const device = rankEnv ? rankDevice(config.model.device, rankEnv.localRank) : config.model.device;
  // Before anything is loaded (or any rank waited for): a configuration that cannot fit its device is refused with the plan.
  if (!options.skipMemoryCheck) {
    const engine = native().info();
    const planned = device === "auto" ? (engine.cudaAvailable ? "cuda:0" : "cpu") : device;
    const check = checkRunMemory(config, { device: planned, worldSize: rankEnv?.worldSize ?? 1, features: engine.features });
    if (check.skipped) log(`memory check skipped: ${check.skipped} (octo-native plan --gpu-memory SIZE plans it by hand)`);
  }
  // zero2/fsdp join a group even alone (WORLD_SIZE=1 runs the sharded code on one device).
  const dp = rankEnv && (rankEnv.worldSize > 1 || config.distributed.strategy !== "ddp")
    ? await DataParallel.join(rankEnv, { timeoutSeconds: config.distributed.timeoutSeconds, backend: config.distributed.backend, device })
    : undefined;
  const isMain = !dp || dp.isMain;
  // The other methods decide things per step from their own rollouts (SRT's early stop and alarm,
  // Trust-GRPO's judge calls): not yet agreed across ranks, so they run in one process for now.
  if (dp && !["grpo", "octopus"].includes(config.method.name))
    throw new Error(`method.name '${config.method.name}': data-parallel training (--nproc / WORLD_SIZE > 1) supports grpo and octopus so far; run it in one process`);
  const run: RunContext = { config, options, runDir, metricsFile: path.join(runDir, "metrics.jsonl"), dp, isMain, device, stopSignals, log };
  run.lock = await onRankZero(run, "taking the run directory", () => {
    makeDirectory(runDir, "the run directory");
    const lock = RunLock.acquire(runDir, log);
    // Under the lock no other writer is alive here: whatever staging is left belongs to a dead one.
    for (const dir of [runDir, path.join(runDir, "checkpoints")])
      for (const removed of removeStaleStaging(dir, { locked: true })) log(`removed ${removed}, left by an interrupted write`);
    return lock;
  });
  return run;
}

/**
 * Runs `work` on rank 0 alone (the only process when not data-parallel). Data-parallel, every rank
 * learns whether it failed and fails with it, instead of waiting at the next collective until the timeout.
 */
async function onRankZero<T>({ dp, isMain }: RunContext, what: string, work: () => T | Promise<T>): Promise<T | undefined> {
  let result: T | undefined;
  let failure: unknown;
  if (isMain)
    try {
      result = await work();
    } catch (error) {
      failure = error;
      if (!dp) throw error;
    }
  if (dp && (await dp.anyTrue(failure !== undefined, what))) throw failure ?? new Error(`${what}: rank 0 failed (its error is in its output)`);
  return result;
}

/**
 * The resolved config into the run directory. A resume must go on with the run it resumes: a changed
 * config or training set is refused unless allowed, and then the old config.yaml is kept as
 * config.until-step-N.yaml.
 */
async function recordRunConfig(run: RunContext, resumeFrom: ResumePoint, trainingSet: TrainingSetFingerprint): Promise<void> {
  const { config, options, runDir, log } = run;
  await onRankZero(run, "the check of the resumed run's config", () => {
    const configFile = path.join(runDir, "config.yaml");
    if (resumeFrom) {
      const { notes, changed } = checkResumeChanges(runDir, config, resumeFrom.state.data, trainingSet, options.allowConfigChange ?? false);
      for (const note of notes) log(note);
      if (changed && fs.existsSync(configFile)) fs.renameSync(configFile, path.join(runDir, `config.until-step-${String(resumeFrom.state.step).padStart(6, "0")}.yaml`));
    }
    writeFileAtomic(configFile, YAML.stringify(config));
  });
}

/** The starting model's directory: model.path, or the demo model (created once, by rank 0, before the others read it). */
async function demoModelOrPath({ config, dp, isMain }: RunContext): Promise<string> {
  if (dp && config.model.path === "demo") {
    if (isMain) await ensureDemoModel();
    await dp.barrier("waiting for rank 0 to create the demo model");
  }
  return config.model.path === "demo" ? await ensureDemoModel() : config.model.path;
}

/** The training problems and the held-out ones (the options' or the config's datasets). */
async function loadRunData({ config, options }: RunContext): Promise<{ examples: Example[]; evalExamples?: Example[] }> {
  const examples = options.examples ?? (config.data.train ? await loadDataset(config.data.train) : undefined);
  if (!examples || examples.length === 0) throw new Error("no training data: set data.train.path in the config");
  const evalExamples = options.evalExamples ?? (config.data.eval ? await loadDataset(config.data.eval) : undefined);
  if (config.run.evalEvery > 0 && !evalExamples)
    throw new Error(`run.evalEvery = ${config.run.evalEvery} needs held-out problems: set data.eval.path in the config (or set run.evalEvery to 0)`);
  return { examples, evalExamples };
}

type ResumePoint = ReturnType<typeof latestCheckpoint>["newest"];

/** The checkpoint a resumed run continues from: the newest valid one, the same on every rank and written at this world size. */
async function resumePoint({ config, options, runDir, dp, log }: RunContext): Promise<ResumePoint> {
  const candidates = options.resume ? latestCheckpoint(runDir) : { skipped: [] };
  for (const { dir, problem } of candidates.skipped) log(`warning: skipping checkpoint ${dir}, which is damaged: ${problem}`);
  const resumeFrom = candidates.newest;
  if (options.resume && !resumeFrom) log(`no ${candidates.skipped.length > 0 ? "usable " : ""}checkpoint in ${runDir}: starting from the beginning`);
  if (dp) await checkSameResumePoint(dp, runDir, resumeFrom?.state.step);
  if (resumeFrom && (resumeFrom.state.worldSize ?? 1) !== (dp?.worldSize ?? 1)) {
    const ranks = resumeFrom.state.worldSize ?? 1;
    // zero2/fsdp re-shard the optimizer state: each rank reads the parts it now owns from the old ranks' files.
    if (config.distributed.strategy !== "ddp") {
      log(`resuming a run of ${ranks} rank(s) on ${dp?.worldSize ?? 1}: the optimizer state is re-sharded (the same updates up to rounding, not bit for bit)`);
      return resumeFrom;
    }
    throw new Error(
      `${resumeFrom.dir} was written by a run of ${ranks} rank(s) but this run has ${dp?.worldSize ?? 1}: ` +
        `resume it at the same world size (--nproc ${ranks}, or WORLD_SIZE=${ranks}); the data order and optimizer steps depend on it`,
    );
  }
  return resumeFrom;
}

/**
 * The policy (from the checkpoint when resuming), the tokenizer, and the reference when a KL term (or a
 * base-model label) needs it. With lora (docs/methods.md §14) the policy is the base plus adapters (fresh,
 * or the checkpoint's) and the reference is that same base with the adapters off: no second model.
 */
async function loadModels({ config, device }: RunContext, modelDir: string, resumeFrom: ResumePoint): Promise<RunModels> {
  const placement = { device, dtype: config.model.dtype };
  if (resumeFrom && isAdapterDir(resumeFrom.dir) !== (config.lora !== undefined))
    throw new ConfigError(
      config.lora
        ? `${resumeFrom.dir} holds a whole model (a run without lora): resume it without the lora block, or start a new run directory`
        : `${resumeFrom.dir} holds a LoRA adapter (a run with lora): resume it with the run's lora block, or start a new run directory`,
    );
  const policy = config.lora
    ? await Model.load(modelDir, { ...placement, lora: { ...config.lora, seed: config.run.seed }, adapter: resumeFrom?.dir })
    : await Model.load(resumeFrom?.dir ?? modelDir, placement);
  const tokenizer = TextTokenizer.fromDir(modelDir);
  if (tokenizer.vocabSize > policy.spec.vocabSize)
    throw new Error(`${modelDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${policy.spec.vocabSize}`);
  const reference = !methodNeedsReference(config) ? undefined : policy.lora ? await policy.withoutAdapters() : await Model.load(modelDir, placement);
  return { modelDir, policy, tokenizer, reference };
}

/** The trainer of the config's optimizer and schedule (also what the RL sanity suite trains with). */
export function createTrainer(config: RunConfig, policy: Model): PolicyTrainer {
  return new PolicyTrainer(policy, {
    schedule: {
      lr: config.optimizer.lr,
      warmupSteps: config.optimizer.warmupSteps,
      kind: config.optimizer.schedule,
      totalSteps: config.run.steps * config.training.miniBatches,
      minLrRatio: config.optimizer.minLrRatio,
    },
    weightDecay: config.optimizer.weightDecay,
    beta1: config.optimizer.beta1,
    beta2: config.optimizer.beta2,
    eps: config.optimizer.eps,
    maxGradNorm: config.optimizer.maxGradNorm,
    microBatchSize: config.training.microBatchSize,
    activationCheckpointing: config.training.activationCheckpointing,
    logprobChunkSize: config.training.logprobChunkSize,
    temperature: config.rollout.temperature > 0 ? config.rollout.temperature : 1,
  });
}

/** The trainer, its state and the data cursor: restored from the checkpoint when resuming, fresh otherwise; metrics.jsonl cut to match. */
async function restoreOrStart(
  run: RunContext,
  policy: Model,
  trainingSet: TrainingSetFingerprint,
  resumeFrom: ResumePoint,
): Promise<{ trainer: PolicyTrainer; state: TrainerState; cursor: DataCursor; resumedMetrics?: MetricsLine[] }> {
  const { config, dp, log } = run;
  const trainer = createTrainer(config, policy);
  let state: TrainerState = { step: 0, optimizerSteps: 0, cursor: { seed: config.run.seed, epoch: 0, position: 0 }, skippedSteps: 0, worldSize: dp?.worldSize ?? 1, data: trainingSet };
  const { strategy } = config.distributed;
  const enable = async () => {
    if (!dp) return;
    await trainer.enableDataParallel(dp, { bucketMegabytes: config.distributed.bucketMegabytes, overlapBackward: config.distributed.overlapBackward, strategy });
    log(`data-parallel: ${dp.worldSize} ranks on ${dp.group.backend}${strategy === "ddp" ? "" : `, ${strategy}`}`);
  };
  // A sharded trainer's state is loaded into its shards; a replicated one's before rank 0's is broadcast.
  if (strategy !== "ddp") await enable();
  if (resumeFrom) {
    await trainer.loadState(optimizerStateFile(resumeFrom.dir));
    state = { ...resumeFrom.state, data: trainingSet, worldSize: dp?.worldSize ?? 1 };
    log(`resuming ${run.runDir} from step ${state.step}`);
  }
  if (strategy === "ddp") await enable();
  const cursor = new DataCursor(trainingSet.examples, state.cursor);
  let resumedMetrics: MetricsLine[] | undefined;
  if (resumeFrom) {
    const { kept, note } = cutMetricsForResume(run.metricsFile, state.step, run.isMain);
    if (note) log(note);
    resumedMetrics = kept;
  } else if (run.isMain) fs.rmSync(run.metricsFile, { force: true });
  return { trainer, state, cursor, resumedMetrics };
}

/**
 * The held-out evaluation (none without held-out problems). Greedy, one sample per problem, the model's own
 * correction as round 2: cheap enough to run every few steps. Data-parallel ranks hold identical weights and
 * each evaluates the whole set (only rank 0 logs it): no rank waits at a collective through a long
 * evaluation, which the process-group timeout would end.
 */
function evaluator({ config }: RunContext, { policy, tokenizer }: RunModels, evalExamples: Example[] | undefined): () => Promise<EvalMetrics | undefined> {
  const octopus = config.method.name === "octopus" || config.method.name === "octopus-srt" ? config.method.octopus : undefined;
  return async () =>
    evalExamples
      ? (
          await evaluateModel(policy, tokenizer, evalExamples, {
            prompt: promptOptions(config),
            separator: octopus?.separator ?? DEFAULT_SEPARATOR,
            maxNewTokens: config.rollout.maxNewTokens,
          })
        ).metrics
      : undefined;
}

/**
 * The steps, from `state` to run.steps: each step's metrics line, its progress line, the periodic
 * evaluations and checkpoints, then the final checkpoint. Ctrl-C (or options.stopAfterSteps) ends it
 * after the step in flight, a method's stop after its step; data-parallel ranks agree on stopping after each step.
 */
async function stepLoop(run: RunContext, loop: LoopStart): Promise<LoopEnd> {
  const { config, options, dp, isMain, log } = run;
  const { models: { policy, reference, tokenizer, modelDir }, trainer, cursor, examples, evalExamples } = loop;
  let state = loop.state;
  const stop = run.stopSignals;
  const bar = progressBar(run, state.step);
  const stopAt = options.stopAfterSteps !== undefined ? state.step + options.stopAfterSteps : Infinity;
  let lastStep: StepMetrics | undefined;
  // Data-parallel, a Ctrl-C or SIGTERM reaches the ranks at different moments: they agree after each step.
  let interrupted = dp ? await dp.anyTrue(stop.requested(), "the agreement on stopping") : stop.requested();
  let stoppedEarly: string | undefined;
  let finalCheckpoint = "";
  const method = await createMethodHook({ config, policy, reference, tokenizer, evalExamples }, modelDir);
  if (loop.resumedMetrics) method.restore?.(loop.resumedMetrics);
  const runner = { config, policy, reference, tokenizer, trainer, examples, cursor, method, distributed: dp };
  const save = async () => {
    // zero2/fsdp: every rank writes its optimizer shard; rank 0 the rest.
    const dir = dp && trainer.sharded
      ? await saveShardedCheckpoint(run.runDir, policy, trainer, state, dp)
      : isMain ? await saveCheckpoint(run.runDir, policy, trainer, state) : checkpointDir(run.runDir, state.step);
    // The other ranks wait for rank 0's save: none exits (and so none lets a launcher or scheduler
    // end the job) before the checkpoint it reports exists.
    if (dp) await dp.barrier(`waiting for rank 0 to save ${dir}`);
    return dir;
  };
  try {
    while (state.step < config.run.steps && !interrupted) {
      const metrics = await rlStep(runner, state.step + 1);
      if (config.run.evalEvery > 0 && (state.step + 1) % config.run.evalEvery === 0) metrics.eval = await loop.evaluate();
      lastStep = metrics;
      state = { ...state, step: state.step + 1, optimizerSteps: trainer.step, cursor: cursor.snapshot, skippedSteps: state.skippedSteps + (metrics.skipped ? 1 : 0) };
      if (isMain) appendMetrics(run.metricsFile, metrics);
      reportStep(run, bar, state.step, metrics);
      if (state.skippedSteps > config.run.maxSkippedSteps)
        throw new Error(`${state.skippedSteps} steps had a NaN/Inf loss, gradient or update (limit run.maxSkippedSteps = ${config.run.maxSkippedSteps}); the last good checkpoint is intact. An update overflows when optimizer.lr (${config.optimizer.lr}) is far too large`);
      interrupted = stop.requested() || state.step >= stopAt;
      if (dp) interrupted = await dp.anyTrue(interrupted, "the agreement on stopping");
      if (metrics.stopReason) {
        log(metrics.stopReason);
        stoppedEarly = metrics.stopReason;
        break;
      }
      if (config.run.saveEvery > 0 && state.step % config.run.saveEvery === 0 && state.step < config.run.steps) finalCheckpoint = await save();
    }
    finalCheckpoint = await save();
  } finally {
    method.dispose();
    bar?.stop();
  }
  return { state, lastStep, interrupted, stoppedEarly, finalCheckpoint };
}

interface StopSignals {
  requested: () => boolean;
  /** the first stop signal received */
  received: () => NodeJS.Signals | undefined;
  dispose: () => void;
}

/**
 * Ctrl-C and SIGTERM (what Slurm and Kubernetes send before they kill): finish the step in flight,
 * save, and exit; a second signal quits at once, with 128 + its number.
 */
function watchStopSignals(log: (line: string) => void): StopSignals {
  let first: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (first) process.exit(128 + os.constants.signals[signal]);
    first = signal;
    log(`\n${signal === "SIGINT" ? "interrupt" : "SIGTERM"}: finishing this step, then saving a checkpoint (Ctrl-C again to quit at once)`);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return {
    requested: () => first !== undefined,
    received: () => first,
    dispose: () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}

/** The progress bar on a TTY (rank 0, not plainProgress or quiet), started at `step`. */
function progressBar({ config, options, isMain }: RunContext, step: number): SingleBar | undefined {
  const bar = process.stderr.isTTY && !options.plainProgress && !options.quiet && isMain
    ? new SingleBar({ format: "train [{bar}] {value}/{total} steps | reward {reward} | acc {acc} | ETA {eta_formatted}", stream: process.stderr })
    : undefined;
  bar?.start(config.run.steps, step, { reward: "-", acc: "-" });
  return bar;
}

/** A finished step on the progress bar, or as a line (and its evaluation's line) in the log. */
function reportStep({ config, log }: RunContext, bar: SingleBar | undefined, step: number, metrics: StepMetrics): void {
  if (bar) bar.update(step, { reward: metrics.reward.toFixed(3), acc: metrics.accuracyFinal.toFixed(3) });
  else
    log(
      `step ${step}/${config.run.steps} reward ${metrics.reward.toFixed(3)} acc@t1 ${metrics.accuracyO1.toFixed(3)} ` +
        `acc@final ${metrics.accuracyFinal.toFixed(3)} kl ${metrics.kl.toExponential(2)} ${metrics.seconds.total.toFixed(1)}s`,
    );
  if (metrics.eval && !bar) log(`eval after step ${step}: acc@t1 ${metrics.eval.accT1.toFixed(3)} acc@t2 ${metrics.eval.accT2.toFixed(3)} Δ ${metrics.eval.delta.toFixed(3)}`);
}

/** summary.json, the models released, the HTML report (rank 0 writes). */
async function finishRun({ runDir, isMain, log }: RunContext, { policy, reference }: RunModels, summary: TrainSummary): Promise<void> {
  if (isMain) writeFileAtomic(path.join(runDir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  policy.dispose();
  reference?.dispose();
  if (isMain) await writeReportAfterRun(runDir, log);
}

/** Every rank must resume from the same checkpoint: a run directory that is not shared (multi-host) would not be. */
async function checkSameResumePoint(dp: DataParallel, runDir: string, step: number | undefined): Promise<void> {
  const mine = step ?? -1;
  const [lowest] = await dp.min([mine], "the agreement on the resume checkpoint");
  const [highest] = await dp.max([mine], "the agreement on the resume checkpoint");
  if (lowest !== highest) {
    const seen = (s: number) => (s < 0 ? "no checkpoint" : `step ${s}`);
    throw new Error(
      `rank ${dp.rank} finds ${seen(mine)} in ${runDir} but another rank finds ${seen(mine === lowest ? highest : lowest)}: ` +
        `all ranks must see the same run directory (a shared filesystem across hosts)`,
    );
  }
}
