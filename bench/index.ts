/** The registry of benches run by `octo-native bench NAME`. */
import { dataParallelBench } from "./data-parallel-bench";
import type { Bench } from "./harness";
import { memoryPlanBench } from "./memory-plan-bench";
import { forwardBench, safetensorsLoadBench } from "./model-benches";
import { octopusStepBench } from "./octopus-bench";
import { samplerBench } from "./sampler-bench";
import { lossBench, trainStepBench } from "./training-benches";
import { vsEagerBench } from "./vs-eager-bench";

export const BENCHES: Record<string, Bench> = {
  "safetensors-load": safetensorsLoadBench,
  forward: forwardBench,
  loss: lossBench,
  "train-step": trainStepBench,
  "octopus-step": octopusStepBench,
  sampler: samplerBench,
  "data-parallel": dataParallelBench,
  "vs-eager": vsEagerBench,
  "memory-plan": memoryPlanBench,
};

export type { Bench, BenchOptions, BenchResult } from "./harness";
