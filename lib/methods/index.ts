/** The method hook of a run's config (method.name), and what the method needs loaded. */
import type { RunConfig } from "../rl/config";
import { grpoHook } from "./grpo/hook";
import type { HookContext, MethodHook } from "./hook";
import { octopusHook, octopusKlCoef } from "./octopus/hook";
import { scoreHook } from "./score/hook";
import { octopusSrtHook, srtHook } from "./srt/hook";
import { createJudge, trustGrpoHook } from "./trust-grpo/hook";

export { rolloutSampling } from "./hook";
export type { GroupBuild, GroupSample, HookContext, MethodHook, PromptRollouts, RolloutOutcome, StepEnd } from "./hook";

/** True when the method needs the frozen reference model: a KL term, or base-model labels. */
export function methodNeedsReference(config: RunConfig): boolean {
  const method = config.method;
  switch (method.name) {
    case "octopus":
      return octopusKlCoef(config) > 0;
    case "octopus-srt":
      return octopusKlCoef(config) > 0 || method.srt.fixedLabels;
    case "score":
      return method.score.beta1 > 0 || (method.score.stage === 1 && method.score.beta2 > 0);
    case "srt":
      return config.loss.klCoef > 0 || method.srt.fixedLabels;
    default:
      return config.loss.klCoef > 0;
  }
}

/** `startingModel`: the run's model directory (what a judge.modelPath of "policy" loads). */
export async function createMethodHook(context: HookContext, startingModel: string): Promise<MethodHook> {
  const { config } = context;
  switch (config.method.name) {
    case "grpo":
      return grpoHook(config);
    case "octopus":
      return octopusHook(config, context.tokenizer);
    case "score":
      return scoreHook(config, context.policy, context.tokenizer);
    case "trust-grpo":
      return trustGrpoHook(context, await createJudge(config, startingModel));
    case "srt":
      return srtHook(context);
    case "octopus-srt":
      return octopusSrtHook(context, octopusKlCoef(config));
  }
}
