/**
 * One side of the vs-eager train-step memory figure (bench/vs-eager-bench.ts), alone in a fresh
 * process: the peak RSS of a process is a high-water mark shared by everything it ever ran, so
 * each side gets its own. Started as `node vs-eager-worker.js '<VsEagerWorkerJob JSON>'`; prints
 * one VsEagerWorkerResult JSON line.
 *
 * Both sides set up alike: the model with fresh weights and the old log-probs of the batch. Then
 * "octo" trains it through PolicyTrainer.trainStep; "eager" copies its weights into the eager
 * baseline, drops the model (so the process holds one set of weights, like transformers), and
 * trains the copy.
 */
import fs from "node:fs";

import { Model } from "../lib/engine/model";
import { PolicyTrainer } from "../lib/engine/trainer";
import { native, type ModelSpec } from "../lib/native";
import { eagerTrainBatch, trainSequences, VS_EAGER_LOSS, VS_EAGER_OPTIMIZER } from "./vs-eager-bench";

export interface VsEagerWorkerJob {
  side: "octo" | "eager";
  spec: ModelSpec;
  device: string;
  batch: number;
  length: number;
  promptTokens: number;
  /** train steps to run (the first allocates the optimizer state) */
  steps: number;
}

export interface VsEagerWorkerResult {
  side: "octo" | "eager";
  /** VmHWM: the process's peak resident set over its whole life (null off Linux) */
  peakRssBytes: number | null;
  /** VmHWM and VmRSS once set up, before the first train step */
  setupPeakRssBytes: number | null;
  setupRssBytes: number | null;
  peakRssMiB: number | null;
  stepSeconds: number[];
  /** VmHWM after each step: where the high-water mark was reached */
  peakRssAfterStepBytes: (number | null)[];
}

/** A field of /proc/self/status in bytes (null where there is no procfs). */
function procStatusBytes(field: "VmHWM" | "VmRSS"): number | null {
  try {
    const match = fs.readFileSync("/proc/self/status", "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function main(job: VsEagerWorkerJob): Promise<VsEagerWorkerResult> {
  const model = await Model.create(job.spec, 0, { device: job.device });
  const sequences = trainSequences(job.spec, job.batch, job.length, job.promptTokens);
  const old = await PolicyTrainer.logprobs(model, sequences.map((s) => s.tokens));
  sequences.forEach((s, i) => (s.oldLogprobs = old[i]));

  let step: () => Promise<unknown>;
  if (job.side === "octo") {
    const { lr, maxGradNorm, weightDecay, beta1, beta2, eps } = VS_EAGER_OPTIMIZER;
    const trainer = new PolicyTrainer(model, { schedule: { lr, warmupSteps: 0, kind: "constant" }, maxGradNorm, weightDecay, beta1, beta2, eps });
    step = () => trainer.trainStep(sequences, { objective: "policy", loss: VS_EAGER_LOSS });
  } else {
    const eager = new (native().ops.EagerModel)(model.handle);
    model.dispose();
    const batch = eagerTrainBatch(sequences);
    step = () => eager.trainStep(batch);
  }
  const setupPeakRssBytes = procStatusBytes("VmHWM"), setupRssBytes = procStatusBytes("VmRSS");
  const stepSeconds: number[] = [], peakRssAfterStepBytes: (number | null)[] = [];
  for (let i = 0; i < job.steps; i++) {
    const start = process.hrtime.bigint();
    await step();
    stepSeconds.push(Number(process.hrtime.bigint() - start) / 1e9);
    peakRssAfterStepBytes.push(procStatusBytes("VmHWM"));
  }
  const peakRssBytes = procStatusBytes("VmHWM");
  return {
    side: job.side,
    peakRssBytes,
    setupPeakRssBytes,
    setupRssBytes,
    peakRssMiB: peakRssBytes === null ? null : peakRssBytes / 2 ** 20,
    stepSeconds,
    peakRssAfterStepBytes,
  };
}

if (require.main === module) {
  main(JSON.parse(process.argv[2]) as VsEagerWorkerJob).then(
    (result) => console.log(JSON.stringify(result)),
    (error: unknown) => {
      console.error(error instanceof Error ? error.stack ?? error.message : String(error));
      process.exit(1);
    },
  );
}
