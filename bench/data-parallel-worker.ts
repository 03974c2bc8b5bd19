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
import { PolicyTrainer, type StepReport, type TrainSequence } from "../lib/engine/trainer";
import type { LossOptions, ModelSpec } from "../lib/native";
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
  variants: { name: string; bucketMegabytes: number; overlapBackward: boolean }[];
  timeoutSeconds: number;
  /** LoRA adapters on every trained model (docs/methods.md §14): the ranks then reduce and save the adapters alone */
  lora?: LoraSettings & { seed: number };
  /** where each rank writes `rank-R/<variant>` weights, `rank-R.jsonl` step reports, `bench-rank-R.json` */
  out: string;
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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, "utf8")) as WorkerJob;
  const env = torchrunEnv();
  const dp = env && env.worldSize > 1 ? await DataParallel.join(env, { timeoutSeconds: job.timeoutSeconds }) : undefined;
  const rank = dp?.rank ?? 0;
  const reference = await Model.create(job.spec, job.seed + 1, { device: "cpu" });
  const schedule = { lr: job.lr, warmupSteps: 0, kind: "constant" as const };
  const runs = await Promise.all(
    job.variants.map(async (variant) => {
      const model = await Model.create(job.spec, job.seed, { device: "cpu", lora: job.lora });
      return { variant, model, trainer: new PolicyTrainer(model, { schedule, microBatchSize: job.microBatchSize }), reports: [] as StepReport[] };
    }),
  );
  for (const run of runs)
    if (dp) await run.trainer.enableDataParallel(dp, { bucketMegabytes: run.variant.bucketMegabytes, overlapBackward: run.variant.overlapBackward });
  // The bench's baseline: the same shard trained without communication.
  const local = job.mode === "bench" ? { model: await Model.create(job.spec, job.seed, { device: "cpu" }), seconds: [] as number[] } : undefined;
  const localTrainer = local && new PolicyTrainer(local.model, { schedule, microBatchSize: job.microBatchSize });

  const log = fs.openSync(path.join(job.out, `rank-${rank}.jsonl`), "w");
  for (let step = 1; step <= job.steps; step++) {
    const batch = stepBatch(job, step);
    const shard = dp ? dp.shard(batch) : batch;
    for (const run of runs) {
      const sequences = await withLogprobs(shard, run.model, reference);
      // Timing: the ranks enter the step together, so no rank's wait for a slower one's log-probs counts as communication.
      if (dp && job.mode === "bench") await dp.barrier("the bench's step start");
      const report = await run.trainer.trainStep(sequences, { objective: "policy", loss: job.loss });
      run.reports.push(report);
      fs.writeSync(log, JSON.stringify({ ...report, rlStep: step, variant: run.variant.name }) + "\n");
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
  } else if (local) {
    // The first step warms up (allocations, Gloo pairs); the medians skip it.
    const measured = runs[0].reports.slice(1);
    const localSeconds = local.seconds.slice(1);
    const communication = (r: StepReport) => (r.communication ? r.communication.countsSeconds + r.communication.gradients.seconds + r.communication.statsSeconds : 0);
    const gradients = measured[0]?.communication?.gradients;
    const result = {
      worldSize: dp?.worldSize ?? 1,
      backend: dp?.group.backend ?? "none",
      stepSeconds: median(measured.map((r) => r.seconds)),
      communicationSeconds: median(measured.map(communication)),
      communicationRatio: median(measured.map((r) => communication(r) / r.seconds)),
      localStepSeconds: median(localSeconds),
      pairedOverheadSeconds: median(measured.map((r, i) => r.seconds - localSeconds[i])),
      gradientAllReduceSeconds: median(measured.map((r) => r.communication?.gradients.seconds ?? 0)),
      smallReductionsSeconds: median(measured.map((r) => (r.communication ? r.communication.countsSeconds + r.communication.statsSeconds : 0))),
      buckets: gradients?.buckets,
      bucketsDuringBackward: gradients?.bucketsDuringBackward,
      gradientBytes: gradients?.bytes,
      steps: measured.length,
    };
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
