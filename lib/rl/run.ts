/**
 * `octo-native train`: an RL run from a config (docs/methods.md §1, §9, §12). Writes the resolved
 * config, metrics.jsonl (one line per step), checkpoints and summary.json into the run
 * directory; resumes from the newest checkpoint; Ctrl-C saves and exits cleanly.
 *
 * Data-parallel (docs/methods.md §13; torchrun's variables in the environment, as `--nproc` sets them):
 * every rank trains on its share of each step (lib/engine/distributed.ts), rank 0 alone writes, and
 * every decision that changes what the ranks do next (resume point, stop) is agreed on first.
 */
import fs from "node:fs";
import path from "node:path";

import { SingleBar } from "cli-progress";
import YAML from "yaml";

import { ensureDemoModel } from "../demo/model";
import { DataParallel, rankDevice, torchrunEnv } from "../engine/distributed";
import { Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { PolicyTrainer } from "../engine/trainer";
import { evaluateModel } from "../eval/evaluate";
import type { EvalMetrics } from "../eval/metrics";
import { createMethodHook, methodNeedsReference } from "../methods";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { writeReportAfterRun } from "../report";
import { writeFileAtomic } from "../util/atomic-file";
import { checkpointDir, latestCheckpoint, optimizerStateFile, saveCheckpoint, type TrainerState } from "./checkpoint";
import type { RunConfig } from "./config";
import { DataCursor, loadDataset, type Example } from "./data";
import { promptOptions } from "./prompts";
import { rlStep, type StepMetrics } from "./step";

export interface TrainOptions {
  resume?: boolean;
  /** examples to train on instead of data.train (the embedded demo) */
  examples?: Example[];
  /** examples to evaluate before, after and every run.evalEvery steps instead of data.eval */
  evalExamples?: Example[];
  /** stop (and save) after this many steps of this invocation, as Ctrl-C would; resume continues */
  stopAfterSteps?: number;
  /** one line per step on stderr even on a TTY (no progress bar) */
  plainProgress?: boolean;
  quiet?: boolean;
}

export interface TrainSummary {
  runDir: string;
  steps: number;
  skippedSteps: number;
  interrupted: boolean;
  /** why the method ended the run before run.steps (SRT early stopping or collapse alarm) */
  stoppedEarly?: string;
  finalCheckpoint: string;
  seconds: number;
  evalBefore?: EvalMetrics;
  evalAfter?: EvalMetrics;
  lastStep?: StepMetrics;
}

/** Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after). */
function truncateMetrics(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const kept = fs.readFileSync(file, "utf8").split("\n").filter((line) => line.trim() !== "" && (JSON.parse(line) as { step: number }).step <= step);
  writeFileAtomic(file, kept.map((l) => l + "\n").join(""));
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
  /** this rank's device */
  device: string;
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
  /** from a checkpoint: the method's state is rebuilt from metrics.jsonl */
  resumed: boolean;
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
  const run = await joinRun(config, options);
  try {
    return await trainJoined(run, started);
  } finally {
    run.dp?.close();
  }
}

async function trainJoined(run: RunContext, started: number): Promise<TrainSummary> {
  const modelDir = await demoModelOrPath(run);
  const { examples, evalExamples } = await loadRunData(run);
  const resumeFrom = await resumePoint(run);
  const models = await loadModels(run, modelDir, resumeFrom);
  const { trainer, state, cursor } = await restoreOrStart(run, models.policy, examples.length, resumeFrom);
  const evaluate = evaluator(run, models, evalExamples);
  const evalBefore = resumeFrom ? undefined : await evaluate();
  const end = await stepLoop(run, { models, trainer, state, cursor, examples, evalExamples, evaluate, resumed: resumeFrom !== undefined });
  // The last step's periodic evaluation already is the final one (same weights, greedy).
  const evalAfter = end.interrupted ? undefined : end.lastStep?.step === end.state.step && end.lastStep.eval ? end.lastStep.eval : await evaluate();
  const summary: TrainSummary = {
    runDir: run.runDir, steps: end.state.step, skippedSteps: end.state.skippedSteps, interrupted: end.interrupted, finalCheckpoint: end.finalCheckpoint,
    stoppedEarly: end.stoppedEarly, seconds: (Date.now() - started) / 1000, evalBefore, evalAfter, lastStep: end.lastStep,
  };
  await finishRun(run, models, summary);
  return summary;
}

/** Joins the ranks (data-parallel), checks the method runs on them, and writes the resolved config into the run directory. */
async function joinRun(config: RunConfig, options: TrainOptions): Promise<RunContext> {
  const runDir = path.resolve(config.run.dir);
  const rankEnv = torchrunEnv();
  const device = rankEnv ? rankDevice(config.model.device, rankEnv.localRank) : config.model.device;
  const dp = rankEnv && rankEnv.worldSize > 1
    ? await DataParallel.join(rankEnv, { timeoutSeconds: config.distributed.timeoutSeconds, backend: config.distributed.backend, device })
    : undefined;
  const isMain = !dp || dp.isMain;
  // The other methods decide things per step from their own rollouts (SRT's early stop and alarm,
  // Trust-GRPO's judge calls): not yet agreed across ranks, so they run in one process for now.
  if (dp && !["grpo", "octopus"].includes(config.method.name))
    throw new Error(`method.name '${config.method.name}': data-parallel training (--nproc / WORLD_SIZE > 1) supports grpo and octopus so far; run it in one process`);
  if (isMain) {
    fs.mkdirSync(runDir, { recursive: true });
    writeFileAtomic(path.join(runDir, "config.yaml"), YAML.stringify(config));
  }
  // Rank 0 reports; the others stay quiet unless something fails.
  const log = (line: string) => !options.quiet && isMain && process.stderr.write(line + "\n");
  return { config, options, runDir, metricsFile: path.join(runDir, "metrics.jsonl"), dp, isMain, device, log };
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

/** The checkpoint a resumed run continues from, the same on every rank and written at this world size. */
async function resumePoint({ options, runDir, dp, log }: RunContext): Promise<ReturnType<typeof latestCheckpoint>> {
  const resumeFrom = options.resume ? latestCheckpoint(runDir) : undefined;
  if (options.resume && !resumeFrom) log(`no checkpoint in ${runDir}: starting from the beginning`);
  if (dp) await checkSameResumePoint(dp, runDir, resumeFrom?.state.step);
  if (resumeFrom && (resumeFrom.state.worldSize ?? 1) !== (dp?.worldSize ?? 1)) {
    const ranks = resumeFrom.state.worldSize ?? 1;
    throw new Error(
      `${resumeFrom.dir} was written by a run of ${ranks} rank(s) but this run has ${dp?.worldSize ?? 1}: ` +
        `resume it at the same world size (--nproc ${ranks}, or WORLD_SIZE=${ranks}); the data order and optimizer steps depend on it`,
    );
  }
  return resumeFrom;
}

/** The policy (from the checkpoint when resuming), the tokenizer, and the reference when a KL term (or a base-model label) needs it. */
async function loadModels({ config, device }: RunContext, modelDir: string, resumeFrom: ReturnType<typeof latestCheckpoint>): Promise<RunModels> {
  const placement = { device, dtype: config.model.dtype };
  const policy = await Model.load(resumeFrom?.dir ?? modelDir, placement);
  const tokenizer = TextTokenizer.fromDir(modelDir);
  if (tokenizer.vocabSize > policy.spec.vocabSize)
    throw new Error(`${modelDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${policy.spec.vocabSize}`);
  const reference = methodNeedsReference(config) ? await Model.load(modelDir, placement) : undefined;
  return { modelDir, policy, tokenizer, reference };
}

/** The trainer of the config's optimizer and schedule. */
function createTrainer(config: RunConfig, policy: Model): PolicyTrainer {
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
async function restoreOrStart(run: RunContext, policy: Model, exampleCount: number, resumeFrom: ReturnType<typeof latestCheckpoint>): Promise<{ trainer: PolicyTrainer; state: TrainerState; cursor: DataCursor }> {
  const { config, dp, log } = run;
  const trainer = createTrainer(config, policy);
  let state: TrainerState = { step: 0, optimizerSteps: 0, cursor: { seed: config.run.seed, epoch: 0, position: 0 }, skippedSteps: 0, worldSize: dp?.worldSize ?? 1 };
  if (resumeFrom) {
    await trainer.loadState(optimizerStateFile(resumeFrom.dir));
    state = resumeFrom.state;
    log(`resuming ${run.runDir} from step ${state.step}`);
  }
  if (dp) {
    await trainer.enableDataParallel(dp, { bucketMegabytes: config.distributed.bucketMegabytes, overlapBackward: config.distributed.overlapBackward });
    log(`data-parallel: ${dp.worldSize} ranks on ${dp.group.backend}`);
  }
  const cursor = new DataCursor(exampleCount, state.cursor);
  if (run.isMain) {
    if (resumeFrom) truncateMetrics(run.metricsFile, state.step);
    else if (fs.existsSync(run.metricsFile)) fs.rmSync(run.metricsFile);
  }
  return { trainer, state, cursor };
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
  const interrupt = watchInterrupt(log);
  const bar = progressBar(run, state.step);
  const stopAt = options.stopAfterSteps !== undefined ? state.step + options.stopAfterSteps : Infinity;
  let lastStep: StepMetrics | undefined;
  // Data-parallel, a Ctrl-C reaches the ranks at different moments: they agree after each step.
  let interrupted = dp ? await dp.anyTrue(interrupt.requested(), "the agreement on stopping") : interrupt.requested();
  let stoppedEarly: string | undefined;
  let finalCheckpoint = "";
  const method = await createMethodHook({ config, policy, reference, tokenizer, evalExamples }, modelDir);
  if (loop.resumed && fs.existsSync(run.metricsFile)) method.restore?.(fs.readFileSync(run.metricsFile, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)));
  const runner = { config, policy, reference, tokenizer, trainer, examples, cursor, method, distributed: dp };
  const save = async () => (isMain ? saveCheckpoint(run.runDir, policy, trainer, state) : checkpointDir(run.runDir, state.step));
  try {
    while (state.step < config.run.steps && !interrupted) {
      const metrics = await rlStep(runner, state.step + 1);
      if (config.run.evalEvery > 0 && (state.step + 1) % config.run.evalEvery === 0) metrics.eval = await loop.evaluate();
      lastStep = metrics;
      state = { step: state.step + 1, optimizerSteps: trainer.step, cursor: cursor.snapshot, skippedSteps: state.skippedSteps + (metrics.skipped ? 1 : 0), worldSize: dp?.worldSize ?? 1 };
      if (isMain) fs.appendFileSync(run.metricsFile, JSON.stringify(metrics) + "\n");
      reportStep(run, bar, state.step, metrics);
      if (state.skippedSteps > config.run.maxSkippedSteps)
        throw new Error(`${state.skippedSteps} steps had a NaN/Inf loss, gradient or update (limit run.maxSkippedSteps = ${config.run.maxSkippedSteps}); the last good checkpoint is intact. An update overflows when optimizer.lr (${config.optimizer.lr}) is far too large`);
      interrupted = interrupt.requested() || state.step >= stopAt;
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
    interrupt.dispose();
  }
  return { state, lastStep, interrupted, stoppedEarly, finalCheckpoint };
}

/** Ctrl-C: finish the step in flight, save, and exit (a second Ctrl-C quits at once). */
function watchInterrupt(log: (line: string) => void): { requested: () => boolean; dispose: () => void } {
  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    log("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to quit at once)");
  };
  process.on("SIGINT", onSignal);
  return { requested: () => stopRequested, dispose: () => process.off("SIGINT", onSignal) };
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
