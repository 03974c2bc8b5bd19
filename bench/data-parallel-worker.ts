/**
 * One rank of a data-parallel training run on synthetic sequences: what the data-parallel bench
 * times and what the tests check for exactness and failure handling. Started as a program with
 * torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; none = one process) and the
 * path of a JSON job (WorkerJob) as its argument.
 *
 * Every step draws the same combined batch on every rank (seeded by the step), each rank trains
 * on its shard of it through PolicyTrainer.trainStep, so the run of N ranks and the run of one
 * process on the whole batch should take the same updates.
 */
import fs from "node:fs";
import path from "node:path";

import { DataParallel, torchrunEnv } from "../lib/engine/distributed";
import type { LoraSettings } from "../lib/engine/lora";
import { Model } from "../lib/engine/model";
import { PolicyTrainer, type DataParallelStrategy, type StepReport, type TrainSequence } from "../lib/engine/trainer";
import { native, type LossOptions, type ModelSpec, type ShardMemory } from "../lib/native";
import { seededRandom } from "../lib/util/random";

export interface WorkerJob {
  /** "train": train and save the weights; "bench": time data-parallel steps against local ones */
  mode: "train" | "bench";
  spec: ModelSpec;
  seed: number;
  steps: number;
  /** sequences of the combined batch of each step, and their lengths */
  sequences: number;
  minLength: number;
  maxLength: number;
  microBatchSize: number;
  lr: number;
  loss: LossOptions;
  /** one trainer per entry (trained one after the other on the same batches), e.g. with and without overlap */
  variants: WorkerVariant[];
  timeoutSeconds: number;
  /** LoRA adapters on every trained model (docs/methods.md §14): the ranks then reduce and save the adapters alone */
  lora?: LoraSettings & { seed: number };
  /** where each rank writes `rank-R/<variant>` weights, `rank-R.jsonl` step reports, `bench-rank-R.json` */
  out: string;
  /** "train": also save the weights and optimizer state after this step, into `state-N/<variant>` (the end's are always saved) */
  saveStateAfter?: number;
  /** continue from a `state-N` directory of an earlier job (weights and optimizer state), at step N + 1 */
  resumeFrom?: { dir: string; step: number };
  /** bench: no twin trained without communication (the strategies' memory runs) */
  noLocalBaseline?: boolean;
}

export interface WorkerVariant {
  name: string;
  bucketMegabytes: number;
  overlapBackward: boolean;
  /** default ddp */
  strategy?: DataParallelStrategy;
  activationCheckpointing?: boolean;
}

/** The weights and optimizer state of `run` into `dir` (rank 0 the weights; sharded: every rank its part, rank 0 the index). */
async function saveState(run: { model: Model; trainer: PolicyTrainer }, dp: DataParallel | undefined, dir: string): Promise<void> {
  const rank = dp?.rank ?? 0;
  fs.mkdirSync(dir, { recursive: true });
  if (run.trainer.sharded && dp) {
    await run.trainer.saveState(path.join(dir, `optimizer-rank-${rank}.safetensors`));
    const files = Array.from({ length: dp.worldSize }, (_, r) => `optimizer-rank-${r}.safetensors`);
    if (rank === 0) PolicyTrainer.writeStateIndex(path.join(dir, "optimizer.index.json"), { strategy: run.trainer.strategyName, worldSize: dp.worldSize, step: run.trainer.step, files });
  } else if (rank === 0) {
    await run.trainer.saveState(path.join(dir, "optimizer.safetensors"));
  }
  if (rank === 0) await run.model.save(path.join(dir, "model"));
  if (dp) await dp.barrier("the worker's state save");
}

function stateFile(dir: string): string {
  const index = path.join(dir, "optimizer.index.json");
  return fs.existsSync(index) ? index : path.join(dir, "optimizer.safetensors");
}

/** A sequence of the step's batch, with the shift its old log-probs get so ratios are not all 1. */
type BatchSequence = TrainSequence & { oldLogprobShift: Float32Array };

/** The combined batch of a step: the same on every rank. */
function stepBatch(job: WorkerJob, step: number): BatchSequence[] {
  const random = seededRandom(job.seed * 7919 + step);
  return Array.from({ length: job.sequences }, () => {
    const length = job.minLength + Math.floor(random() * (job.maxLength - job.minLength + 1));
    const tokens = Int32Array.from({ length }, () => Math.floor(random() * job.spec.vocabSize));
    const promptLength = 1 + Math.floor(random() * (length / 2));
    const lossMask = Float32Array.from({ length }, (_, t) => (t >= promptLength ? 1 : 0));
    const oldLogprobShift = Float32Array.from({ length }, () => 0.05 * (random() - 0.5));
    return { tokens, lossMask, advantage: random() * 2 - 1, oldLogprobShift };
  });
}

/** Old log-probs (the policy before the step, shifted) and reference log-probs. */
async function withLogprobs(sequences: BatchSequence[], policy: Model, reference: Model): Promise<TrainSequence[]> {
  if (sequences.length === 0) return sequences;
  const tokens = sequences.map((s) => s.tokens);
  const old = await PolicyTrainer.logprobs(policy, tokens);
  const ref = await PolicyTrainer.logprobs(reference, tokens);
  return sequences.map((s, i) => ({ ...s, oldLogprobs: old[i].map((x, t) => x + s.oldLogprobShift[t]), refLogprobs: ref[i] }));
}

/**
 * One variant's steps, timed: communication (the collectives the step waited for) against the step,
 * and against the same shard trained without communication (`localSeconds`, paired by step); the
 * bytes each kind of collective moved per step; the memory the rank held.
 */
function benchSummary(measured: (StepReport & { memory?: ShardMemory; devicePeakBytes?: number })[], localSeconds: number[] | undefined, worldSize: number, backend: string) {
  const communication = (r: StepReport) =>
    r.communication ? r.communication.countsSeconds + r.communication.gradients.seconds + r.communication.statsSeconds + (r.communication.parameters?.seconds ?? 0) : 0;
  const gradients = measured[0]?.communication?.gradients;
  const sharded = gradients !== undefined && measured[0]?.communication?.parameters !== undefined;
  // What the collectives carry per step: the tensors handed to them (payload), and what a ring
  // algorithm sends per rank for them: all-reduce 2(W-1)/W of its bytes, reduce-scatter and
  // all-gather (W-1)/W. Gloo here runs the reduce-scatter as an all-reduce (docs/methods.md §13).
  const share = (worldSize - 1) / worldSize;
  const payload = {
    gradients: gradients?.bytes ?? 0,
    parameterGathersInStep: gradients?.gatherBytes ?? 0,
    parameterGatherAfterStep: median(measured.map((r) => r.communication?.parameters?.bytes ?? 0)),
  };
  const ring = (reduceScatterFactor: number) =>
    (sharded ? reduceScatterFactor : 2) * share * payload.gradients + share * (payload.parameterGathersInStep + payload.parameterGatherAfterStep);
  const memory = measured.at(-1);
  return {
    stepSeconds: median(measured.map((r) => r.seconds)),
    communicationSeconds: median(measured.map(communication)),
    communicationRatio: median(measured.map((r) => communication(r) / r.seconds)),
    localStepSeconds: localSeconds ? median(localSeconds) : undefined,
    pairedOverheadSeconds: localSeconds ? median(measured.map((r, i) => r.seconds - localSeconds[i])) : undefined,
    gradientAllReduceSeconds: median(measured.map((r) => r.communication?.gradients.seconds ?? 0)),
    parameterGatherSeconds: median(measured.map((r) => r.communication?.parameters?.seconds ?? 0)),
    smallReductionsSeconds: median(measured.map((r) => (r.communication ? r.communication.countsSeconds + r.communication.statsSeconds : 0))),
    buckets: gradients?.buckets,
    bucketsDuringBackward: gradients?.bucketsDuringBackward,
    gradientBytes: gradients?.bytes,
    payloadBytesPerStep: payload,
    ringBytesPerRankPerStep: ring(1),
    ringBytesPerRankPerStepAsRun: backend === "gloo" ? ring(2) : ring(1),
    devicePeakBytes: memory?.devicePeakBytes,
    shardMemory: memory?.memory,
    steps: measured.length,
  };
}

/** What bench-rank-R.json holds per variant. */
export type BenchSummary = ReturnType<typeof benchSummary>;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, "utf8")) as WorkerJob;
  const env = torchrunEnv();
  // WORLD_SIZE=1 still makes a group of one: the sharded strategies run their code alone.
  const dp = env ? await DataParallel.join(env, { timeoutSeconds: job.timeoutSeconds }) : undefined;
  const rank = dp?.rank ?? 0;
  const reference = await Model.create(job.spec, job.seed + 1, { device: "cpu" });
  const schedule = { lr: job.lr, warmupSteps: 0, kind: "constant" as const };
  type Measured = StepReport & { memory?: ShardMemory; devicePeakBytes?: number };
  const runs = await Promise.all(
    job.variants.map(async (variant) => {
      const model = job.resumeFrom
        ? await Model.load(path.join(job.resumeFrom.dir, variant.name, "model"), { device: "cpu" })
        : await Model.create(job.spec, job.seed, { device: "cpu", lora: job.lora });
      const trainer = new PolicyTrainer(model, { schedule, microBatchSize: job.microBatchSize, activationCheckpointing: variant.activationCheckpointing ?? false });
      return { variant, model, trainer, reports: [] as Measured[] };
    }),
  );
  for (const run of runs) {
    const strategy = run.variant.strategy ?? "ddp";
    const enable = () => dp && run.trainer.enableDataParallel(dp, { bucketMegabytes: run.variant.bucketMegabytes, overlapBackward: run.variant.overlapBackward, strategy });
    // A sharded trainer loads its state into its shards; a replicated one before rank 0's weights are broadcast.
    if (strategy !== "ddp") await enable();
    if (job.resumeFrom) await run.trainer.loadState(stateFile(path.join(job.resumeFrom.dir, run.variant.name)));
    if (strategy === "ddp") await enable();
  }
  // The bench's baseline: the same shard trained without communication.
  const local = job.mode === "bench" && !job.noLocalBaseline ? { model: await Model.create(job.spec, job.seed, { device: "cpu" }), seconds: [] as number[] } : undefined;
  const localTrainer = local && new PolicyTrainer(local.model, { schedule, microBatchSize: job.microBatchSize });

  const log = fs.openSync(path.join(job.out, `rank-${rank}.jsonl`), "w");
  for (let step = (job.resumeFrom?.step ?? 0) + 1; step <= job.steps; step++) {
    const batch = stepBatch(job, step);
    const shard = dp ? dp.shard(batch) : batch;
    for (const run of runs) {
      const sequences = await withLogprobs(shard, run.model, reference);
      // Timing: the ranks enter the step together, so no rank's wait for a slower one's log-probs counts as communication.
      if (dp && job.mode === "bench") await dp.barrier("the bench's step start");
      native().ops.deviceMemory("cpu", { resetPeak: true });
      const report = await run.trainer.trainStep(sequences, { objective: "policy", loss: job.loss });
      const peakBytes = native().ops.deviceMemory("cpu").peakBytes;
      const memory = run.trainer.sharded ? await run.trainer.memory() : undefined;
      run.reports.push(Object.assign(report, { memory, devicePeakBytes: peakBytes }));
      fs.writeSync(log, JSON.stringify({ ...report, rlStep: step, variant: run.variant.name, memory, devicePeakBytes: peakBytes }) + "\n");
      if (job.mode === "train" && (step === job.saveStateAfter || step === job.steps)) await saveState(run, dp, path.join(job.out, `state-${step}`, run.variant.name));
    }
    if (localTrainer && local && shard.length > 0) {
      const sequences = await withLogprobs(shard, local.model, reference);
      if (dp) await dp.barrier("the bench's step start");
      const report = await localTrainer.trainStep(sequences, { objective: "policy", loss: job.loss });
      local.seconds.push(report.seconds);
    }
    process.stdout.write(`step ${step} done\n`);
  }
  fs.closeSync(log);

  if (job.mode === "train") {
    for (const run of runs) await run.model.save(path.join(job.out, `rank-${rank}`, run.variant.name));
  } else {
    // The first step warms up (allocations, Gloo pairs); the medians skip it.
    const localSeconds = local?.seconds.slice(1);
    const worldSize = dp?.worldSize ?? 1;
    const byVariant = Object.fromEntries(runs.map((run) => [run.variant.name, benchSummary(run.reports.slice(1), localSeconds, worldSize, dp?.group.backend ?? "none")]));
    const result = { worldSize, backend: dp?.group.backend ?? "none", ...byVariant[runs[0].variant.name], variants: byVariant };
    fs.writeFileSync(path.join(job.out, `bench-rank-${rank}.json`), JSON.stringify(result, null, 2) + "\n");
  }
  for (const run of runs) run.model.dispose();
  reference.dispose();
  local?.model.dispose();
}

if (require.main === module) {
  main(process.argv[2]).catch((error: unknown) => {
    process.stderr.write(`octo-native: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
