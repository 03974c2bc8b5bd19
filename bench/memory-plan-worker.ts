/**
 * One rank of the memory planner's check against measurement (bench/memory-plan-bench.ts,
 * test/memory-plan.test.ts): trains a model on synthetic sequences with data-parallel ddp (torchrun's
 * variables in the environment; none = one process) and reports, beside the planner's bytes for the
 * same shapes, the peak bytes of live tensors the engine's allocator counted (ops.deviceMemory: on
 * CPU exact and deterministic, whatever the BLAS). Run as a program with a MemoryJob JSON file.
 */
import fs from "node:fs";

import { DataParallel, torchrunEnv } from "../lib/engine/distributed";
import { planMemory, type MemoryPlanInput } from "../lib/engine/memory-plan";
import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { native, type ModelSpec } from "../lib/native";

export interface MemoryJob {
  spec: ModelSpec;
  /** sequences each rank trains on per step, all `length` tokens, the loss on those after `promptTokens` */
  sequencesPerRank: number;
  length: number;
  promptTokens: number;
  microBatchSize: number;
  activationCheckpointing: boolean;
  timeoutSeconds: number;
}

/** The planner's input for the job's training on `worldSize` CPU ranks (fp32, this build's attention). */
export function jobPlanInput(job: MemoryJob, worldSize: number): MemoryPlanInput {
  const features = native().info().features;
  return {
    spec: job.spec,
    device: "cpu",
    dtype: "float32",
    attention: features.includes("sdpa-gqa") ? "sdpa-gqa" : features.includes("sdpa") ? "sdpa" : "explicit",
    worldSize,
    strategy: "ddp",
    reference: false,
    rollout: { rows: 1, promptTokens: 1, maxNewTokens: 1 },
    training: {
      microBatchSize: job.microBatchSize,
      sequenceTokens: job.length,
      lossTokens: job.length - job.promptTokens,
      microBatchesPerStep: Math.ceil(job.sequencesPerRank / job.microBatchSize),
      activationCheckpointing: job.activationCheckpointing,
      logprobChunkSize: 0,
      entropy: false,
    },
    bucketBytes: 25 * 2 ** 20,
    memoryBytes: 2 ** 50,
  };
}

export interface RankMemory {
  rank: number;
  worldSize: number;
  /** peak bytes of live tensors during a training step / an old-log-prob pass, from before the model was made */
  measuredTrainingBytes: number;
  measuredLogprobsBytes: number;
  plannedTrainingBytes: number;
  plannedLogprobsBytes: number;
}

/** Trains two steps on this rank and measures both phases (the second step's: the optimizer state exists). */
export async function measureRank(job: MemoryJob, dp?: DataParallel): Promise<RankMemory> {
  const ops = native().ops;
  const start = ops.deviceMemory("cpu", { resetPeak: true }).currentBytes;
  const model = await Model.create(job.spec, 0, { device: "cpu" });
  const trainer = new PolicyTrainer(model, {
    schedule: { lr: 1e-6, warmupSteps: 0, kind: "constant" },
    microBatchSize: job.microBatchSize,
    activationCheckpointing: job.activationCheckpointing,
  });
  try {
    if (dp) await trainer.enableDataParallel(dp, { bucketMegabytes: 25, overlapBackward: true });
    const rank = dp?.rank ?? 0, V = job.spec.vocabSize;
    const sequences: TrainSequence[] = Array.from({ length: job.sequencesPerRank }, (_, i) => {
      const b = rank * job.sequencesPerRank + i;
      return {
        tokens: Int32Array.from({ length: job.length }, (_, t) => (b * 7919 + t * 104729) % V),
        lossMask: Float32Array.from({ length: job.length }, (_, t) => (t >= job.promptTokens ? 1 : 0)),
        advantage: b % 2 === 0 ? 1 : -1,
      };
    });
    const logprobs = () => PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens), { microBatchSize: job.microBatchSize });
    const old = await logprobs();
    sequences.forEach((s, i) => (s.oldLogprobs = old[i]));
    const loss = { ratioLevel: "sequence" as const, clipLow: 3e-4, clipHigh: 4e-4, aggregation: "seq-mean-token-mean" as const };
    let measuredTrainingBytes = 0;
    for (let step = 0; step < 2; step++) {
      ops.deviceMemory("cpu", { resetPeak: true });
      await trainer.trainStep(sequences, { objective: "policy", loss });
      measuredTrainingBytes = Math.max(measuredTrainingBytes, ops.deviceMemory("cpu").peakBytes - start);
    }
    ops.deviceMemory("cpu", { resetPeak: true });
    await logprobs();
    const measuredLogprobsBytes = ops.deviceMemory("cpu").peakBytes - start;
    const plan = planMemory(jobPlanInput(job, dp?.worldSize ?? 1));
    return { rank, worldSize: dp?.worldSize ?? 1, measuredTrainingBytes, measuredLogprobsBytes, plannedTrainingBytes: plan.phases.training, plannedLogprobsBytes: plan.phases.logprobs };
  } finally {
    model.dispose();
  }
}

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, "utf8")) as MemoryJob;
  const env = torchrunEnv();
  const dp = env && env.worldSize > 1 ? await DataParallel.join(env, { timeoutSeconds: job.timeoutSeconds }) : undefined;
  try {
    console.log(JSON.stringify(await measureRank(job, dp)));
  } finally {
    dp?.close();
  }
}

if (require.main === module)
  main(process.argv[2]).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  });
