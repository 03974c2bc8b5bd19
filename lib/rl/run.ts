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

import { writeFileAtomic } from "../util/atomic-file";
import { checkpointDir, latestCheckpoint, optimizerStateFile, saveCheckpoint, type TrainerState } from "./checkpoint";
import type { RunConfig } from "./config";
import { DataCursor, loadDataset, type Example } from "./data";
import { ensureDemoModel } from "../demo/model";
import { DataParallel, rankDevice, torchrunEnv } from "../engine/distributed";
import { evaluateModel } from "../eval/evaluate";
import type { EvalMetrics } from "../eval/metrics";
import { createMethodHook, methodNeedsReference } from "../methods";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { Model } from "../engine/model";
import { writeReportAfterRun } from "../report";
import { rlStep, type StepMetrics } from "./step";
import { TextTokenizer } from "../engine/tokenizer";
import { PolicyTrainer } from "../engine/trainer";

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

export async function runTraining(config: RunConfig, options: TrainOptions = {}): Promise<TrainSummary> {
  const started = Date.now();
  const runDir = path.resolve(config.run.dir);
  const rankEnv = torchrunEnv();
  const distributedDevice = rankEnv ? rankDevice(config.model.device, rankEnv.localRank) : config.model.device;
  const dp = rankEnv && rankEnv.worldSize > 1
    ? await DataParallel.join(rankEnv, { timeoutSeconds: config.distributed.timeoutSeconds, backend: config.distributed.backend, device: distributedDevice })
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

  // The demo model is created once, by rank 0, before the others read it.
  if (dp && config.model.path === "demo") {
    if (isMain) await ensureDemoModel();
    await dp.barrier("waiting for rank 0 to create the demo model");
  }
  const modelDir = config.model.path === "demo" ? await ensureDemoModel() : config.model.path;
  const examples = options.examples ?? (config.data.train ? await loadDataset(config.data.train) : undefined);
  if (!examples || examples.length === 0) throw new Error("no training data: set data.train.path in the config");
  const evalExamples = options.evalExamples ?? (config.data.eval ? await loadDataset(config.data.eval) : undefined);
  if (config.run.evalEvery > 0 && !evalExamples)
    throw new Error(`run.evalEvery = ${config.run.evalEvery} needs held-out problems: set data.eval.path in the config (or set run.evalEvery to 0)`);

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
  const device = { device: distributedDevice, dtype: config.model.dtype };
  const policy = await Model.load(resumeFrom?.dir ?? modelDir, device);
  const tokenizer = TextTokenizer.fromDir(modelDir);
  if (tokenizer.vocabSize > policy.spec.vocabSize)
    throw new Error(`${modelDir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${policy.spec.vocabSize}`);
  const octopus = config.method.name === "octopus" || config.method.name === "octopus-srt" ? config.method.octopus : undefined;
  const reference = methodNeedsReference(config) ? await Model.load(modelDir, device) : undefined;

  const trainer = new PolicyTrainer(policy, {
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
  const worldSize = dp?.worldSize ?? 1;
  let state: TrainerState = { step: 0, optimizerSteps: 0, cursor: { seed: config.run.seed, epoch: 0, position: 0 }, skippedSteps: 0, worldSize };
  if (resumeFrom) {
    await trainer.loadState(optimizerStateFile(resumeFrom.dir));
    state = resumeFrom.state;
    log(`resuming ${runDir} from step ${state.step}`);
  }
  if (dp) {
    await trainer.enableDataParallel(dp, { bucketMegabytes: config.distributed.bucketMegabytes, overlapBackward: config.distributed.overlapBackward });
    log(`data-parallel: ${dp.worldSize} ranks on ${dp.group.backend}`);
  }
  const cursor = new DataCursor(examples.length, state.cursor);
  const metricsFile = path.join(runDir, "metrics.jsonl");
  if (isMain) {
    if (resumeFrom) truncateMetrics(metricsFile, state.step);
    else if (fs.existsSync(metricsFile)) fs.rmSync(metricsFile);
  }

  // Greedy, one sample per problem, the model's own correction as round 2: cheap enough to run every few steps.
  // Data-parallel ranks hold identical weights and each evaluates the whole set (only rank 0 logs it): no
  // rank waits at a collective through a long evaluation, which the process-group timeout would end.
  const evaluate = async () =>
    evalExamples
      ? (
          await evaluateModel(policy, tokenizer, evalExamples, {
            prompt: { template: config.data.promptTemplate, chat: config.data.chat, chatTemplateVariables: config.data.chatTemplateVariables },
            separator: octopus?.separator ?? DEFAULT_SEPARATOR,
            maxNewTokens: config.rollout.maxNewTokens,
          })
        ).metrics
      : undefined;
  const evalBefore = resumeFrom ? undefined : await evaluate();

  // Ctrl-C: finish the step in flight, save, and exit.
  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    log("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to quit at once)");
  };
  process.on("SIGINT", onSignal);
  const bar = process.stderr.isTTY && !options.plainProgress && !options.quiet && isMain
    ? new SingleBar({ format: "train [{bar}] {value}/{total} steps | reward {reward} | acc {acc} | ETA {eta_formatted}", stream: process.stderr })
    : undefined;
  bar?.start(config.run.steps, state.step, { reward: "-", acc: "-" });

  const stopAt = options.stopAfterSteps !== undefined ? state.step + options.stopAfterSteps : Infinity;
  let lastStep: StepMetrics | undefined;
  // Data-parallel, a Ctrl-C reaches the ranks at different moments: they agree after each step.
  let interrupted = dp ? await dp.anyTrue(stopRequested, "the agreement on stopping") : stopRequested;
  let stoppedEarly: string | undefined;
  let finalCheckpoint = "";
  const method = await createMethodHook({ config, policy, reference, tokenizer, evalExamples }, modelDir);
  if (resumeFrom && fs.existsSync(metricsFile)) method.restore?.(fs.readFileSync(metricsFile, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)));
  const runner = { config, policy, reference, tokenizer, trainer, examples, cursor, method, distributed: dp };
  const save = async () => (isMain ? saveCheckpoint(runDir, policy, trainer, state) : checkpointDir(runDir, state.step));
  try {
    while (state.step < config.run.steps && !interrupted) {
      const metrics = await rlStep(runner, state.step + 1);
      if (config.run.evalEvery > 0 && (state.step + 1) % config.run.evalEvery === 0) metrics.eval = await evaluate();
      lastStep = metrics;
      state = { step: state.step + 1, optimizerSteps: trainer.step, cursor: cursor.snapshot, skippedSteps: state.skippedSteps + (metrics.skipped ? 1 : 0), worldSize };
      if (isMain) fs.appendFileSync(metricsFile, JSON.stringify(metrics) + "\n");
      if (bar) bar.update(state.step, { reward: metrics.reward.toFixed(3), acc: metrics.accuracyFinal.toFixed(3) });
      else
        log(
          `step ${state.step}/${config.run.steps} reward ${metrics.reward.toFixed(3)} acc@t1 ${metrics.accuracyO1.toFixed(3)} ` +
            `acc@final ${metrics.accuracyFinal.toFixed(3)} kl ${metrics.kl.toExponential(2)} ${metrics.seconds.total.toFixed(1)}s`,
        );
      if (metrics.eval && !bar) log(`eval after step ${state.step}: acc@t1 ${metrics.eval.accT1.toFixed(3)} acc@t2 ${metrics.eval.accT2.toFixed(3)} Δ ${metrics.eval.delta.toFixed(3)}`);
      if (state.skippedSteps > config.run.maxSkippedSteps)
        throw new Error(`${state.skippedSteps} steps had a NaN/Inf loss or gradient (limit run.maxSkippedSteps = ${config.run.maxSkippedSteps}); the last good checkpoint is intact`);
      interrupted = stopRequested || state.step >= stopAt;
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
    process.off("SIGINT", onSignal);
  }
  // The last step's periodic evaluation already is the final one (same weights, greedy).
  const evalAfter = interrupted ? undefined : lastStep?.step === state.step && lastStep.eval ? lastStep.eval : await evaluate();
  const summary: TrainSummary = {
    runDir, steps: state.step, skippedSteps: state.skippedSteps, interrupted, finalCheckpoint, stoppedEarly,
    seconds: (Date.now() - started) / 1000, evalBefore, evalAfter, lastStep,
  };
  if (isMain) writeFileAtomic(path.join(runDir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  policy.dispose();
  reference?.dispose();
  if (isMain) await writeReportAfterRun(runDir, log);
  return summary;
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
