/**
 * The memory planner (lib/engine/memory-plan.ts) against measurement: the peak bytes of live tensors
 * of a ddp training step and of an old-log-prob pass, per rank, at 1, 2 and 4 local Gloo ranks on
 * the ~50M-parameter bench model (bench/memory-plan-worker.ts), beside the planner's bytes.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { launchLocalRanks } from "../lib/commands/launch";
import { benchEnvironment, type Bench } from "./harness";
import type { MemoryJob, RankMemory } from "./memory-plan-worker";
import { benchModelSpec } from "./model-benches";

const WORKER = path.join(__dirname, "memory-plan-worker.js");

/** Each rank's report (one JSON line each) of the job at `nproc` ranks (1: one process), from the compiled `worker`. */
export async function measureRanks(job: MemoryJob, nproc: number, worker = WORKER): Promise<RankMemory[]> {
  if (!fs.existsSync(worker)) throw new Error(`${worker} is missing: the bench runs the compiled worker (npm run build:ts)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-memory-plan-"));
  try {
    const jobFile = path.join(dir, "job.json");
    fs.writeFileSync(jobFile, JSON.stringify(job));
    const lines: string[] = [];
    const launched = await launchLocalRanks({ nproc, command: process.execPath, args: [worker, jobFile], write: (_, line) => lines.push(line) });
    if (launched.exitCode !== 0) throw new Error(`the memory-plan worker failed (exit ${launched.exitCode}):\n${lines.join("\n")}`);
    return lines.filter((l) => l.includes('"measuredTrainingBytes"')).map((l) => JSON.parse(l.slice(l.indexOf("{"))) as RankMemory);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export const memoryPlanBench: Bench = {
  description: "planned vs measured peak bytes per rank of a ddp training step and a log-prob pass, 1/2/4 Gloo ranks, ~50M-parameter model",
  async run({ quick }) {
    const spec = benchModelSpec(quick);
    const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
    const runs = [];
    for (const activationCheckpointing of [false, true])
      for (const nproc of quick ? [1, 2] : [1, 2, 4]) {
        const job: MemoryJob = { spec, sequencesPerRank: 4, length: quick ? 128 : 256, promptTokens: 16, microBatchSize: 2, activationCheckpointing, timeoutSeconds: 600 };
        const [rank0] = (await measureRanks(job, nproc)).sort((a, b) => a.rank - b.rank);
        runs.push({
          ranks: nproc,
          activationCheckpointing,
          trainingMiB: { planned: mib(rank0.plannedTrainingBytes), measured: mib(rank0.measuredTrainingBytes), ratio: rank0.plannedTrainingBytes / rank0.measuredTrainingBytes },
          logprobsMiB: { planned: mib(rank0.plannedLogprobsBytes), measured: mib(rank0.measuredLogprobsBytes), ratio: rank0.plannedLogprobsBytes / rank0.measuredLogprobsBytes },
        });
      }
    const ratios = runs.flatMap((r) => [r.trainingMiB.ratio, r.logprobsMiB.ratio]);
    return {
      bench: "memory-plan",
      ratioMeaning: "the planned / measured peak bytes furthest from 1 over the runs (1 = exact; the planner is held to 0.85-1.15)",
      ratio: ratios.reduce((far, r) => (Math.abs(r - 1) > Math.abs(far - 1) ? r : far), 1),
      runs,
      measured: "peak bytes of live CPU tensors (ops.deviceMemory), rank 0, the second step (optimizer state allocated), from before the model was created",
      parameters: "bench/model-benches.ts benchModelSpec; 4 sequences per rank, micro-batches of 2",
      environment: benchEnvironment(),
    };
  },
};
