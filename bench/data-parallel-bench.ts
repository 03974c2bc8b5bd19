/**
 * The cost of data parallelism per step (docs/methods.md §13), for each strategy (ddp, zero2, fsdp;
 * `--strategy` picks some) in one run: two local Gloo ranks train a ~50M-parameter model
 * (bench/model-benches.ts) on their halves of each batch, one trainer per strategy on the same
 * batches. A rank's communication time is what its step spends in collectives (the step-wide
 * counts, the gradient reductions the backward did not hide, fsdp's parameter gathers, the
 * all-gather after the update, the statistics); it also holds any wait for a slower peer. The ratio
 * takes the rank that waited least (the transfer cost itself) over its step time; the other rank's
 * ratio adds the imbalance. As a cross-check each rank also trains a twin model on the same half
 * without communication: the paired step-time difference. The volume is what the collectives
 * carry per step, and what a ring algorithm sends per rank for it.
 *
 * Then the memory: for 1, 2 and 4 ranks and each strategy, one trainer per run, each rank's peak
 * tensor bytes over a step (the engine's allocator: policy, reference model, activations, optimizer
 * state) and what its trainer holds (the shards).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { launchLocalRanks } from "../lib/commands/launch";
import type { DataParallelStrategy } from "../lib/engine/trainer";
import type { BenchSummary, WorkerJob } from "./data-parallel-worker";
import { benchEnvironment, type Bench } from "./harness";
import { benchModelSpec } from "./model-benches";

const WORKER = path.join(__dirname, "data-parallel-worker.js");
const ALL_STRATEGIES: DataParallelStrategy[] = ["ddp", "zero2", "fsdp"];

async function launch(out: string, job: WorkerJob, nproc: number): Promise<{ variants: Record<string, BenchSummary> }[]> {
  const jobFile = path.join(out, "job.json");
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const lines: string[] = [];
  const launched = await launchLocalRanks({ nproc, command: process.execPath, args: [WORKER, jobFile], write: (_, line) => lines.push(line) });
  if (launched.exitCode !== 0) throw new Error(`the data-parallel bench ranks failed (exit ${launched.exitCode}):\n${lines.join("\n")}`);
  return Array.from({ length: nproc }, (_, rank) => JSON.parse(fs.readFileSync(path.join(out, `bench-rank-${rank}.json`), "utf8")));
}

export const dataParallelBench: Bench = {
  description: "communication overhead and volume of a data-parallel step at 2 local Gloo ranks per strategy (ddp, zero2, fsdp), and per-rank memory at 1, 2, 4 ranks",
  async run({ quick, strategies }) {
    if (!fs.existsSync(WORKER)) throw new Error(`${WORKER} is missing: the bench runs the compiled worker (npm run build:ts)`);
    const chosen = strategies && strategies.length > 0 ? strategies : ALL_STRATEGIES;
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bench-dp-"));
    try {
      const length = quick ? 64 : 256;
      const base: Omit<WorkerJob, "out" | "variants"> = {
        mode: "bench",
        spec: benchModelSpec(quick),
        seed: 0,
        steps: quick ? 4 : 8,
        sequences: 8, // 4 per rank
        minLength: length,
        maxLength: length,
        microBatchSize: 4,
        lr: 1e-5,
        loss: { aggregation: "token-mean" },
        timeoutSeconds: 600,
      };
      const variants = chosen.map((strategy) => ({ name: strategy, bucketMegabytes: 25, overlapBackward: true, strategy }));
      const ranks = await launch(path.join(out, "time"), { ...base, variants, out: path.join(out, "time") }, 2);
      const perStrategy = Object.fromEntries(
        chosen.map((strategy) => {
          const [a, b] = ranks.map((r) => r.variants[strategy]);
          const best = a.communicationRatio <= b.communicationRatio ? a : b;
          return [
            strategy,
            {
              ratio: best.communicationRatio,
              withImbalanceRatio: Math.max(a.communicationRatio, b.communicationRatio),
              pairedOverheadRatio: (best.pairedOverheadSeconds ?? NaN) / best.stepSeconds,
              stepSeconds: best.stepSeconds,
              localStepSeconds: best.localStepSeconds,
              communicationSeconds: best.communicationSeconds,
              payloadBytesPerStep: best.payloadBytesPerStep,
              ringBytesPerRankPerStep: best.ringBytesPerRankPerStep,
              ringBytesPerRankPerStepAsRun: best.ringBytesPerRankPerStepAsRun,
              reductions: best.buckets,
              reductionsDuringBackward: best.bucketsDuringBackward,
            },
          ];
        }),
      );

      // Memory: one strategy per run, so each rank's peak is that trainer's alone (plus the reference model).
      const memory: Record<string, unknown>[] = [];
      for (const worldSize of [1, 2, 4])
        for (const strategy of chosen) {
          const dir = path.join(out, `memory-${strategy}-${worldSize}`);
          const job: WorkerJob = { ...base, steps: 2, sequences: 4 * worldSize, minLength: 64, maxLength: 64, noLocalBaseline: true, variants: [variants.find((v) => v.strategy === strategy)!], out: dir };
          const results = (await launch(dir, job, worldSize)).map((r) => r.variants[strategy]);
          memory.push({
            strategy,
            worldSize,
            peakBytesPerRank: results.map((r) => r.devicePeakBytes),
            // zero2/fsdp: what the trainer holds on rank 0 (masters, moments, gradient shards, parameters)
            shardMemory: results[0].shardMemory,
          });
        }
      const first = perStrategy[chosen[0]];
      return {
        bench: "data-parallel",
        ratioMeaning: `time in collectives per step / step time, ${chosen[0]}, 2 Gloo ranks, median over steps, the rank that waited least (lower is better); every strategy's under 'strategies'`,
        ratio: first.ratio,
        strategies: perStrategy,
        strategiesMeaning:
          "ratio / withImbalanceRatio / pairedOverheadRatio as for ddp; payloadBytesPerStep: bytes handed to the collectives " +
          "(gradients: all-reduced for ddp, reduce-scattered every micro-batch for zero2/fsdp; parameter gathers in and after the step); " +
          "ringBytesPerRankPerStep: what a ring sends per rank (NCCL); ...AsRun: on Gloo, whose reduce-scatter is an all-reduce here",
        memory,
        memoryMeaning: "per rank: peak tensor bytes of the engine's allocator over a training step (policy, reference, activations, optimizer state; 4 sequences of 64 tokens per rank)",
        sequencesPerRank: base.sequences / 2,
        length,
        parameters: "bench/model-benches.ts benchModelSpec",
        threadsPerRank: Math.max(1, Math.floor(os.availableParallelism() / 2)),
        environment: benchEnvironment(),
      };
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  },
};
