/**
 * Checkpoints of a run (docs/methods.md §9, §12): the model in the Hugging Face layout plus the
 * optimizer state and everything else a resumed run needs (step, data cursor). Written to a
 * temporary directory and renamed into place, so a checkpoint directory is always complete.
 */
import fs from "node:fs";
import path from "node:path";

import type { Model } from "../engine/model";
import type { PolicyTrainer } from "../engine/trainer";
import type { DataCursorState } from "./data";

const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";

export interface TrainerState {
  /** RL steps completed */
  step: number;
  /** optimizer steps taken (mini-batches) */
  optimizerSteps: number;
  cursor: DataCursorState;
  skippedSteps: number;
  /** ranks of the data-parallel run that wrote it (absent: 1); a resume needs as many */
  worldSize?: number;
}

export function checkpointDir(runDir: string, step: number): string {
  return path.join(runDir, "checkpoints", `step-${String(step).padStart(6, "0")}`);
}

export async function saveCheckpoint(runDir: string, model: Model, trainer: PolicyTrainer, state: TrainerState): Promise<string> {
  const final = checkpointDir(runDir, state.step);
  const staging = `${final}.partial-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  await model.save(staging);
  await trainer.saveState(path.join(staging, OPTIMIZER_FILE));
  fs.writeFileSync(path.join(staging, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(staging, final);
  return final;
}

/** The newest complete checkpoint of a run, if any. */
export function latestCheckpoint(runDir: string): { dir: string; state: TrainerState } | undefined {
  const root = path.join(runDir, "checkpoints");
  if (!fs.existsSync(root)) return undefined;
  const complete = fs
    .readdirSync(root)
    .filter((d) => /^step-\d+$/.test(d) && fs.existsSync(path.join(root, d, STATE_FILE)))
    .sort();
  if (complete.length === 0) return undefined;
  const dir = path.join(root, complete[complete.length - 1]);
  return { dir, state: JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), "utf8")) as TrainerState };
}

export function optimizerStateFile(checkpoint: string): string {
  return path.join(checkpoint, OPTIMIZER_FILE);
}
