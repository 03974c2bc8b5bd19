/**
 * The cost of data parallelism per step at 2 ranks (docs/methods.md §13): two local Gloo ranks train a
 * ~50M-parameter model (bench/model-benches.ts) on their halves of each batch. A rank's
 * communication time is what its step spends in collectives (the step-wide counts, the gradient
 * buckets the backward did not hide, the statistics); it also holds any wait for a slower peer.
 * The ratio takes the rank that waited least (the transfer cost itself) over its step time; the
 * other rank's ratio adds the imbalance. As a cross-check each rank also trains a twin model on
 * the same half without communication: the paired step-time difference.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { launchLocalRanks } from "../lib/commands/launch";
import type { WorkerJob } from "./data-parallel-worker";
import { benchEnvironment, type Bench } from "./harness";
import { benchModelSpec } from "./model-benches";

const WORKER = path.join(__dirname, "data-parallel-worker.js");

export const dataParallelBench: Bench = {
  description: "all-reduce overhead of a data-parallel step at 2 local Gloo ranks, as a fraction of the step time",
  async run({ quick }) {
    if (!fs.existsSync(WORKER)) throw new Error(`${WORKER} is missing: the bench runs the compiled worker (npm run build:ts)`);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bench-dp-"));
    try {
      const length = quick ? 64 : 256;
      const job: WorkerJob = {
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
        variants: [{ name: "data-parallel", bucketMegabytes: 25, overlapBackward: true }],
        timeoutSeconds: 600,
        out,
      };
      const jobFile = path.join(out, "job.json");
      fs.writeFileSync(jobFile, JSON.stringify(job));
      const lines: string[] = [];
      const launched = await launchLocalRanks({ nproc: 2, command: process.execPath, args: [WORKER, jobFile], write: (_, line) => lines.push(line) });
      if (launched.exitCode !== 0) throw new Error(`the data-parallel bench ranks failed (exit ${launched.exitCode}):\n${lines.join("\n")}`);
      const ranks = [0, 1].map((rank) => JSON.parse(fs.readFileSync(path.join(out, `bench-rank-${rank}.json`), "utf8")));
      const best = ranks[0].communicationRatio <= ranks[1].communicationRatio ? ranks[0] : ranks[1];
      return {
        bench: "data-parallel",
        ratioMeaning: "time in all-reduces per step / step time, 2 Gloo ranks, median over steps, the rank that waited least (lower is better)",
        ratio: best.communicationRatio,
        withImbalanceRatio: Math.max(ranks[0].communicationRatio, ranks[1].communicationRatio),
        withImbalanceRatioMeaning: "the same for the rank that waited most: the transfer plus waiting for the slower peer",
        pairedOverheadRatio: best.pairedOverheadSeconds / best.stepSeconds,
        pairedOverheadRatioMeaning: "(data-parallel step - same-shard step without communication) / data-parallel step, median of per-step pairs (noisy on a shared CPU)",
        ranks,
        sequencesPerRank: job.sequences / 2,
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
