/** Plain GRPO-family rollouts (docs/methods.md §5): verifier reward 1/0 per response, trained as generated. */
import { overlongPenalty } from "../../rl/advantages";
import type { RunConfig } from "../../rl/config";
import { answerMatches, plainSample, type GroupBuild, type MethodHook, type PromptRollouts } from "../hook";

/** DAPO overlong shaping of a response of `length` tokens (0 when advantage.overlongCache is 0). */
export function overlongShaping(config: RunConfig, length: number): number {
  return config.advantage.overlongCache > 0 ? overlongPenalty(length, config.rollout.maxNewTokens, config.advantage.overlongCache) : 0;
}

export function buildGrpoGroup(config: RunConfig, group: PromptRollouts): GroupBuild {
  const rollouts = group.texts.map((text, i) => {
    const correct = answerMatches(group.example.answer, text);
    return { firstCorrect: correct, finalCorrect: correct, hasMarker: false, reward: (correct ? 1 : 0) + overlongShaping(config, group.samples[i].tokens.length) };
  });
  return { samples: group.samples.map((s, i) => plainSample(s.tokens, rollouts[i].reward)), rollouts, train: true };
}

export function grpoHook(config: RunConfig): MethodHook {
  return {
    groupSize: config.rollout.samplesPerPrompt,
    klCoef: config.loss.klCoef,
    rollout: {},
    buildGroups: async (groups) => groups.map((g) => buildGrpoGroup(config, g)),
    finishStep: async () => ({}),
    dispose: () => {},
  };
}
