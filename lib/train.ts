/**
 * `octo-native train`: an RL run from a config (SPEC §1, §9, §12). Writes the resolved
 * config, metrics.jsonl (one line per step), checkpoints and summary.json into the run
 * directory; resumes from the newest checkpoint; Ctrl-C saves and exits cleanly.
 */
import fs from "node:fs";
import path from "node:path";

import { SingleBar } from "cli-progress";
import YAML from "yaml";

import { latestCheckpoint, optimizerStateFile, saveCheckpoint, type TrainerState } from "./checkpoint";
import type { RunConfig } from "./config";
import { DataCursor, loadDataset, type Example } from "./data";
import { ensureDemoModel } from "./demo-model";
import { evaluateSelfCorrection, type SelfCorrectionMetrics } from "./evaluate";
import { createMethodHook, methodNeedsReference } from "./method-hooks";
import { DEFAULT_SEPARATOR } from "./methods/octopus";
import { Model } from "./model";
import { rlStep, type StepMetrics } from "./rl";
import { TextTokenizer } from "./tokenizer";
import { PolicyTrainer } from "./training";

export interface TrainOptions {
  resume?: boolean;
  /** examples to train on instead of data.train (the embedded demo) */
  examples?: Example[];
  /** examples to evaluate before and after instead of data.eval */
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
  evalBefore?: SelfCorrectionMetrics;
  evalAfter?: SelfCorrectionMetrics;
  lastStep?: StepMetrics;
}

function writeAtomic(file: string, text: string): void {
  const temp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(temp, text);
  fs.renameSync(temp, file);
}

/** Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after). */
function truncateMetrics(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const kept = fs.readFileSync(file, "utf8").split("\n").filter((line) => line.trim() !== "" && (JSON.parse(line) as { step: number }).step <= step);
  writeAtomic(file, kept.map((l) => l + "\n").join(""));
}

export async function runTraining(config: RunConfig, options: TrainOptions = {}): Promise<TrainSummary> {
  const started = Date.now();
  const runDir = path.resolve(config.run.dir);
  fs.mkdirSync(runDir, { recursive: true });
  writeAtomic(path.join(runDir, "config.yaml"), YAML.stringify(config));
  const log = (line: string) => !options.quiet && process.stderr.write(line + "\n");

  const modelDir = config.model.path === "demo" ? await ensureDemoModel() : config.model.path;
  const examples = options.examples ?? (config.data.train ? await loadDataset(config.data.train) : undefined);
  if (!examples || examples.length === 0) throw new Error("no training data: set data.train.path in the config");
  const evalExamples = options.evalExamples ?? (config.data.eval ? await loadDataset(config.data.eval) : undefined);

  const resumeFrom = options.resume ? latestCheckpoint(runDir) : undefined;
  if (options.resume && !resumeFrom) log(`no checkpoint in ${runDir}: starting from the beginning`);
  const device = { device: config.model.device, dtype: config.model.dtype };
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
  let state: TrainerState = { step: 0, optimizerSteps: 0, cursor: { seed: config.run.seed, epoch: 0, position: 0 }, skippedSteps: 0 };
  if (resumeFrom) {
    await trainer.loadState(optimizerStateFile(resumeFrom.dir));
    state = resumeFrom.state;
    log(`resuming ${runDir} from step ${state.step}`);
  }
  const cursor = new DataCursor(examples.length, state.cursor);
  const metricsFile = path.join(runDir, "metrics.jsonl");
  if (resumeFrom) truncateMetrics(metricsFile, state.step);
  else if (fs.existsSync(metricsFile)) fs.rmSync(metricsFile);

  const evaluate = async () =>
    evalExamples
      ? (
          await evaluateSelfCorrection(policy, tokenizer, evalExamples, {
            prompt: { template: config.data.promptTemplate, chat: config.data.chat, chatTemplateVariables: config.data.chatTemplateVariables },
            separator: octopus?.separator ?? DEFAULT_SEPARATOR,
            maxNewTokens: config.rollout.maxNewTokens,
          })
        ).metrics
      : undefined;
  const evalBefore = resumeFrom ? undefined : await evaluate();

  // Ctrl-C: finish the step in flight, save, and exit.
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to quit at once)");
  };
  process.on("SIGINT", onSignal);
  const bar = process.stderr.isTTY && !options.plainProgress && !options.quiet
    ? new SingleBar({ format: "train [{bar}] {value}/{total} steps | reward {reward} | acc {acc} | ETA {eta_formatted}", stream: process.stderr })
    : undefined;
  bar?.start(config.run.steps, state.step, { reward: "-", acc: "-" });

  const stopAt = options.stopAfterSteps !== undefined ? state.step + options.stopAfterSteps : Infinity;
  let lastStep: StepMetrics | undefined;
  let stoppedEarly: string | undefined;
  let finalCheckpoint = "";
  const method = await createMethodHook({ config, policy, reference, tokenizer, evalExamples }, modelDir);
  if (resumeFrom && fs.existsSync(metricsFile)) method.restore?.(fs.readFileSync(metricsFile, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l)));
  const runner = { config, policy, reference, tokenizer, trainer, examples, cursor, method };
  try {
    while (state.step < config.run.steps && !interrupted) {
      const metrics = await rlStep(runner, state.step + 1);
      lastStep = metrics;
      state = { step: state.step + 1, optimizerSteps: trainer.step, cursor: cursor.snapshot, skippedSteps: state.skippedSteps + (metrics.skipped ? 1 : 0) };
      fs.appendFileSync(metricsFile, JSON.stringify(metrics) + "\n");
      if (bar) bar.update(state.step, { reward: metrics.reward.toFixed(3), acc: metrics.accuracyFinal.toFixed(3) });
      else
        log(
          `step ${state.step}/${config.run.steps} reward ${metrics.reward.toFixed(3)} acc@t1 ${metrics.accuracyO1.toFixed(3)} ` +
            `acc@final ${metrics.accuracyFinal.toFixed(3)} kl ${metrics.kl.toExponential(2)} ${metrics.seconds.total.toFixed(1)}s`,
        );
      if (state.skippedSteps > config.run.maxSkippedSteps)
        throw new Error(`${state.skippedSteps} steps had a NaN/Inf loss or gradient (limit run.maxSkippedSteps = ${config.run.maxSkippedSteps}); the last good checkpoint is intact`);
      if (state.step >= stopAt) interrupted = true;
      if (metrics.stopReason) {
        log(metrics.stopReason);
        stoppedEarly = metrics.stopReason;
        break;
      }
      if (config.run.saveEvery > 0 && state.step % config.run.saveEvery === 0 && state.step < config.run.steps)
        finalCheckpoint = await saveCheckpoint(runDir, policy, trainer, state);
    }
    finalCheckpoint = await saveCheckpoint(runDir, policy, trainer, state);
  } finally {
    method.dispose();
    bar?.stop();
    process.off("SIGINT", onSignal);
  }
  const evalAfter = interrupted ? undefined : await evaluate();
  const summary: TrainSummary = {
    runDir, steps: state.step, skippedSteps: state.skippedSteps, interrupted, finalCheckpoint, stoppedEarly,
    seconds: (Date.now() - started) / 1000, evalBefore, evalAfter, lastStep,
  };
  writeAtomic(path.join(runDir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  policy.dispose();
  reference?.dispose();
  return summary;
}
