/**
 * `octo-native plan`: the per-GPU memory of a training run from a model's config.json (no weights)
 * or a run config (lib/rl/memory-check.ts, lib/engine/memory-plan.ts; docs/methods.md §13).
 */
import { MemoryPlanError, parseMemorySize, planMemory, type Strategy } from "../engine/memory-plan";
import { native } from "../native";
import { applyOverrides, loadConfig, parseConfig, type RunConfig } from "../rl/config";
import { attentionOfFeatures, formatMemoryPlan, memoryPlanJson, planInput, readModelSpec, withPlanOverrides } from "../rl/memory-check";
import { printJson } from "./print";

export interface PlanCommandArgs {
  model?: string;
  config?: string;
  set: string[];
  nproc: number;
  "gpu-memory": string;
  strategy?: string;
  lora?: number;
  "prompt-tokens"?: number;
  device: string;
  json: boolean;
}

/** The run config planned: the recipe, or the schema's defaults around --model. */
function plannedConfig(args: PlanCommandArgs): RunConfig {
  if ((args.model === undefined) === (args.config === undefined))
    throw new MemoryPlanError("give --model DIR (a Hugging Face directory; the rest from the config defaults) or --config FILE (a run recipe), one of them");
  if (args.config !== undefined) return loadConfig(args.config, args.set);
  return parseConfig(applyOverrides({ model: { path: args.model } }, args.set), "--model");
}

/**
 * The attention kernel of the engine that will train: this build's when it runs there (CPU, or a
 * CUDA build planning CUDA); a CUDA box planned from elsewhere is assumed to run libtorch >= 2.5.
 */
function plannedAttention(device: "cuda" | "cpu") {
  try {
    const info = native().info();
    if (device === "cpu" || info.cudaAvailable) return attentionOfFeatures(info.features);
  } catch {
    // no engine built here: plan by the assumption below
  }
  return device === "cpu" ? "explicit" : "sdpa-gqa";
}

export function planCommand(args: PlanCommandArgs): void {
  if (!Number.isInteger(args.nproc) || args.nproc < 1) throw new MemoryPlanError(`--nproc must be a positive integer (GPUs of the run), not ${args.nproc}`);
  if (args.device !== "cuda" && args.device !== "cpu") throw new MemoryPlanError(`--device ${args.device}: plan for cuda or cpu`);
  const memoryBytes = parseMemorySize(args["gpu-memory"], "--gpu-memory");
  const config = withPlanOverrides(plannedConfig(args), { strategy: args.strategy as Strategy | undefined, loraRank: args.lora });
  const spec = readModelSpec(config.model.path);
  const judgePath = config.method.name === "trust-grpo" && config.method.trustGrpo.judge.backend === "engine" ? config.method.trustGrpo.judge.modelPath : undefined;
  const judgeSpec = judgePath === undefined ? undefined : judgePath === "policy" ? spec : readModelSpec(judgePath);
  const device = args.device;
  const plan = planMemory(
    planInput(config, spec, { device, worldSize: args.nproc, memoryBytes, attention: plannedAttention(device), promptTokens: args["prompt-tokens"] }, judgeSpec),
  );
  if (args.json) printJson(memoryPlanJson(plan));
  else console.log(formatMemoryPlan(plan));
}
