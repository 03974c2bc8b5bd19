/**
 * Checkpoints of a run (docs/methods.md §9, §12; docs/reliability.md): the model in the Hugging Face
 * layout (a LoRA run: its adapter in PEFT's, §14) plus the optimizer state and everything else a
 * resumed run needs (step, data cursor).
 * Written to a staging directory, every file fsynced, then renamed into place and the rename
 * fsynced, so a `step-NNNNNN` directory is complete even after a power cut. A resume still checks
 * each candidate whole (headers, sizes, state) and falls back past a damaged one.
 */
import fs from "node:fs";
import path from "node:path";

import { z } from "zod";

import type { DataParallel } from "../engine/distributed";
import { ADAPTER_WEIGHTS_FILE, isAdapterDir, readAdapterConfig } from "../engine/lora";
import { inspectCheckpoint, type Model } from "../engine/model";
import { readSafetensorsHeader } from "../engine/safetensors";
import { PolicyTrainer } from "../engine/trainer";
import { syncDirectory, writeFileDurable } from "../util/atomic-file";
import { pausePoint } from "../util/fault-points";
import { readRegularFile } from "../util/files";
import { stagingName } from "../util/staging";
import type { TrainingSetFingerprint } from "./config-change";
import type { DataCursorState } from "./data";

const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";
/** zero2/fsdp: the index of the ranks' optimizer shards, and each rank's file */
const OPTIMIZER_INDEX = "optimizer.index.json";
const optimizerShardFile = (rank: number, worldSize: number) =>
  `optimizer-rank-${String(rank).padStart(5, "0")}-of-${String(worldSize).padStart(5, "0")}.safetensors`;
const CHECKPOINT_NAME = /^step-(\d{6,})$/;

export interface TrainerState {
  /** RL steps completed */
  step: number;
  /** optimizer steps taken (mini-batches) */
  optimizerSteps: number;
  cursor: DataCursorState;
  skippedSteps: number;
  /** ranks of the data-parallel run that wrote it (absent: 1); a resume needs as many */
  worldSize?: number;
  /** the training set it was trained on (lib/rl/config-change.ts): a resume on other data is refused */
  data?: TrainingSetFingerprint;
}

const count = z.number().int().min(0);
const trainerStateSchema = z.object({
  step: count,
  optimizerSteps: count,
  cursor: z.object({ seed: count, epoch: count, position: count }),
  skippedSteps: count,
  worldSize: z.number().int().positive().optional(),
  data: z.object({ examples: count, sha256: z.string() }).optional(),
});

export function checkpointDir(runDir: string, step: number): string {
  return path.join(runDir, "checkpoints", `step-${String(step).padStart(6, "0")}`);
}

/** The step in a checkpoint directory's name (NaN for other names). */
function stepOfCheckpoint(dir: string): number {
  return Number(CHECKPOINT_NAME.exec(path.basename(dir))?.[1]);
}

export async function saveCheckpoint(runDir: string, model: Model, trainer: PolicyTrainer, state: TrainerState): Promise<string> {
  const final = checkpointDir(runDir, state.step);
  const staging = stagingName(final, "partial");
  fs.mkdirSync(path.dirname(final), { recursive: true });
  try {
    await model.save(staging);
    await pausePoint("checkpoint-model-written");
    await trainer.saveState(path.join(staging, OPTIMIZER_FILE));
    writeFileDurable(path.join(staging, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
    syncDirectory(staging);
    // A checkpoint of this step from an earlier attempt (a resume that re-ran it) is replaced whole.
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(staging, final);
    syncDirectory(path.dirname(final));
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw Object.assign(new Error(`saving the checkpoint of step ${state.step} failed: ${(error as Error).message}. The earlier checkpoints are intact: fix the cause (free space?) and --resume`), { cause: error });
  }
  return final;
}

/**
 * A checkpoint of a sharded run (zero2/fsdp; docs/methods.md §13), made by every rank together: rank 0
 * makes the staging directory, each rank writes its optimizer shard into it, then rank 0 adds the
 * consolidated model (every rank holds the whole of it after a step), the shards' index and the
 * trainer state, and renames it into place. The other ranks wait for that at the caller's barrier.
 */
export async function saveShardedCheckpoint(runDir: string, model: Model, trainer: PolicyTrainer, state: TrainerState, dp: DataParallel): Promise<string> {
  const final = checkpointDir(runDir, state.step);
  const stagingOf = (pid: number) => `${final}.partial-${pid}-shards`;
  let made = -1;
  let failure: unknown;
  if (dp.isMain) {
    try {
      fs.mkdirSync(path.dirname(final), { recursive: true });
      fs.rmSync(stagingOf(process.pid), { recursive: true, force: true });
      fs.mkdirSync(stagingOf(process.pid));
      made = process.pid;
    } catch (error) {
      failure = error;
    }
  }
  // Rank 0's pid names the staging directory (a stale one is then recognised as its own).
  const [pid] = await dp.max([made], `creating the staging directory of ${final}`);
  const fail = (what: string, error: unknown) =>
    Object.assign(new Error(`saving the checkpoint of step ${state.step} failed: ${what}. The earlier checkpoints are intact: fix the cause (free space?) and --resume`), { cause: error });
  if (pid < 0) throw fail(failure ? (failure as Error).message : "rank 0 could not create its staging directory (its error is in its output)", failure);
  const staging = stagingOf(pid);
  let shardFailure: unknown;
  try {
    await trainer.saveState(path.join(staging, optimizerShardFile(dp.rank, dp.worldSize)));
  } catch (error) {
    shardFailure = error;
  }
  if (await dp.anyTrue(shardFailure !== undefined, "writing the optimizer shards")) {
    if (dp.isMain) fs.rmSync(staging, { recursive: true, force: true });
    throw fail(shardFailure ? (shardFailure as Error).message : "another rank could not write its optimizer shard (its error is in its output)", shardFailure);
  }
  if (!dp.isMain) return final;
  try {
    await model.save(staging, { overwrite: true });
    await pausePoint("checkpoint-model-written");
    const files = Array.from({ length: dp.worldSize }, (_, rank) => optimizerShardFile(rank, dp.worldSize));
    PolicyTrainer.writeStateIndex(path.join(staging, OPTIMIZER_INDEX), { strategy: trainer.strategyName, worldSize: dp.worldSize, step: trainer.step, files });
    writeFileDurable(path.join(staging, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
    syncDirectory(staging);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(staging, final);
    syncDirectory(path.dirname(final));
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw fail((error as Error).message, error);
  }
  return final;
}

/** Why `dir` cannot be resumed from, or its state when it can: every file present, parseable and of the size its header says. */
export function checkCheckpoint(dir: string): { state: TrainerState } | { problem: string } {
  const stateFile = path.join(dir, STATE_FILE);
  try {
    const parsed = trainerStateSchema.safeParse(JSON.parse(readRegularFile(stateFile, "utf8")));
    if (!parsed.success) return { problem: `${stateFile}: ${parsed.error.issues.map((i) => `${i.path.join(".") || "(top)"}: ${i.message}`).join("; ")}` };
    const expectedStep = stepOfCheckpoint(dir);
    if (parsed.data.step !== expectedStep) return { problem: `${stateFile}: says step ${parsed.data.step} in the directory of step ${expectedStep}` };
    // A LoRA run's checkpoint holds the adapter (checked against the base when it is loaded).
    if (isAdapterDir(dir)) {
      readAdapterConfig(dir);
      readSafetensorsHeader(path.join(dir, ADAPTER_WEIGHTS_FILE));
    } else inspectCheckpoint(dir);
    if (fs.existsSync(path.join(dir, OPTIMIZER_INDEX))) {
      const index = PolicyTrainer.readStateIndex(path.join(dir, OPTIMIZER_INDEX));
      for (const file of index.paths) readSafetensorsHeader(file);
    } else {
      readSafetensorsHeader(path.join(dir, OPTIMIZER_FILE));
    }
    return { state: parsed.data };
  } catch (error) {
    const message = (error as Error).message;
    return { problem: error instanceof SyntaxError ? `${stateFile}: not valid JSON (${message})` : message };
  }
}

export interface ResumeCandidates {
  /** the newest checkpoint that passed checkCheckpoint */
  newest?: { dir: string; state: TrainerState };
  /** newer checkpoints passed over, and why */
  skipped: { dir: string; problem: string }[];
}

/** The newest complete checkpoint of a run, checked whole, and the damaged newer ones it passed over. */
export function latestCheckpoint(runDir: string): ResumeCandidates {
  const root = path.join(runDir, "checkpoints");
  const skipped: ResumeCandidates["skipped"] = [];
  if (!fs.existsSync(root)) return { skipped };
  const newestFirst = fs.readdirSync(root).filter((d) => CHECKPOINT_NAME.test(d)).sort((a, b) => stepOfCheckpoint(b) - stepOfCheckpoint(a));
  for (const name of newestFirst) {
    const dir = path.join(root, name);
    const checked = checkCheckpoint(dir);
    if ("state" in checked) return { newest: { dir, state: checked.state }, skipped };
    skipped.push({ dir, problem: checked.problem });
  }
  return { skipped };
}

/** The optimizer state of a checkpoint: one file, or (zero2/fsdp) the index of the ranks' shards. */
export function optimizerStateFile(checkpoint: string): string {
  const index = path.join(checkpoint, OPTIMIZER_INDEX);
  return fs.existsSync(index) ? index : path.join(checkpoint, OPTIMIZER_FILE);
}
