/**
 * Octopus rollouts (docs/methods.md §6.1): parse o1/o2, the r_sc reward, the n augmented pairs and the
 * Stage I / II masks (lib/methods/octopus/octopus.ts), as one advantage group of 2n (n without augmentation).
 */
import type { TextTokenizer } from "../../engine/tokenizer";
import type { RunConfig } from "../../rl/config";
import { overlongShaping } from "../grpo/hook";
import { answerMatches, type GroupBuild, type GroupSample, type MethodHook, type PromptRollouts } from "../hook";
import {
  correctionBucket,
  correctionReward,
  formatReward,
  pairCorrectionRollouts,
  scoreCorrectionResponse,
  stageMasks,
  tokenizeCorrection,
  type CorrectionBucket,
} from "./octopus";

/**
 * The group of one prompt, o1 and o2 judged by `isCorrect` (against the gold label for Octopus,
 * against the majority answer for octopus-srt).
 */
export function buildOctopusGroup(config: RunConfig, tokenizer: TextTokenizer, group: PromptRollouts, isCorrect: (part: string) => boolean): GroupBuild {
  const octopus = config.method.octopus;
  const n = config.rollout.samplesPerPrompt;
  const maxLength = config.rollout.maxNewTokens;
  const eosId = tokenizer.eosTokenIds[0];
  const scored = group.texts.map((t) => scoreCorrectionResponse(t, isCorrect, octopus.separator));
  scored.forEach((s, i) => (s.reward += overlongShaping(config, group.samples[i].tokens.length)));
  const rollouts = scored.map((s) => ({
    firstCorrect: s.o1Correct,
    finalCorrect: s.finalCorrect,
    hasMarker: s.hasMarker,
    reward: s.reward,
    transition: s.hasMarker ? correctionBucket(s.o1Correct, s.o2Correct === true) : undefined,
  }));
  const sample = (ids: ReturnType<typeof tokenizeCorrection>, correctness: { o1Correct?: boolean; o2Correct?: boolean }, reward: number): GroupSample => {
    const masks = stageMasks(ids, octopus.stage, correctness);
    // Stage II (and no Stage-I KL): the configured KL goes on the loss tokens.
    return { response: ids.ids, lossMask: masks.lossMask, klMask: octopus.stage === 1 ? masks.klMask : masks.lossMask, returns: [reward] };
  };
  const original = (i: number): GroupSample => {
    const s = scored[i];
    const eos = group.samples[i].finishReason === "eos" ? eosId : undefined;
    const ids = tokenizeCorrection(tokenizer, s.o1Segment, octopus.separator, s.hasMarker ? s.o2Segment : undefined, eos, maxLength);
    return sample(ids, { o1Correct: s.o1Correct, o2Correct: s.o2Correct }, s.reward);
  };
  if (!octopus.augment) return { samples: scored.map((_, i) => original(i)), rollouts, train: true };

  const augmented: Record<CorrectionBucket | "copy", number> = { w2c: 0, c2c: 0, c2w: 0, w2w: 0, copy: 0 };
  const paired = pairCorrectionRollouts(scored, { n, seed: group.seed + 1, separator: octopus.separator });
  const samples = paired.samples.map((member) => {
    if (member.kind !== "pair") {
      if (member.kind === "copy") augmented.copy++;
      return original(member.rolloutIndex);
    }
    augmented[member.bucket]++;
    const ids = tokenizeCorrection(tokenizer, member.o1, octopus.separator, member.o2, eosId, maxLength);
    const reward = correctionReward({
      hasMarker: true, o1: member.o1, o2: member.o2, o1Correct: member.o1Correct, o2Correct: member.o2Correct,
      formatO1: formatReward(member.o1, octopus.separator), formatO2: formatReward(member.o2, octopus.separator),
    });
    return sample(ids, { o1Correct: member.o1Correct, o2Correct: member.o2Correct }, reward);
  });
  return { samples, rollouts, augmented, train: true };
}

/** Octopus' KL: Stage I regularises o1 only with its own β; Stage II takes the configured KL. */
export function octopusKlCoef(config: RunConfig): number {
  return config.method.octopus.stage === 1 ? config.method.octopus.o1KlCoef : config.loss.klCoef;
}

export function octopusHook(config: RunConfig, tokenizer: TextTokenizer): MethodHook {
  const octopus = config.method.octopus;
  return {
    groupSize: octopus.augment ? 2 * config.rollout.samplesPerPrompt : config.rollout.samplesPerPrompt,
    klCoef: octopusKlCoef(config),
    rollout: {},
    buildGroups: async (groups) => groups.map((g) => buildOctopusGroup(config, tokenizer, g, (part) => answerMatches(g.example.answer, part))),
    finishStep: async () => ({}),
    dispose: () => {},
  };
}
