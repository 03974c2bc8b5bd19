/**
 * SCoRe rollouts (docs/methods.md §6.2): turn 2 continues each turn-1 sample from x ⊕ y1 ⊕ I through the
 * sampler's prefix cache (the keys and values of x ⊕ y1 are reused, not recomputed); per-turn
 * rewards, returns, loss masks and per-token KL coefficients from lib/methods/score/score.ts.
 */
import type { Model } from "../../engine/model";
import type { GenerationResult } from "../../engine/sampling";
import { stopSequencesFor } from "../../engine/stop-strings";
import type { TextTokenizer } from "../../engine/tokenizer";
import type { RunConfig } from "../../rl/config";
import { ConfigError } from "../../rl/config";
import { rolloutSeed } from "../../util/random";
import { mean } from "../../util/stats";
import { answerMatches, rolloutSampling, type GroupBuild, type MethodHook, type PromptRollouts } from "../hook";
import { correctionBucket } from "../octopus/octopus";
import { scoreMasks, scoreTurnReturns, twoTurnTokens } from "./score";

/** y1 without the turn-1 stop string it ended on (the instruction follows instead). */
function turnOneTokens(sample: GenerationResult, stopSequences: number[][]): Int32Array {
  if (sample.finishReason !== "stop") return sample.tokens;
  const t = sample.tokens;
  const stop = stopSequences.find((s) => s.length <= t.length && s.every((id, k) => t[t.length - s.length + k] === id));
  return stop ? t.subarray(0, t.length - stop.length) : t;
}

export function scoreHook(config: RunConfig, policy: Model, tokenizer: TextTokenizer): MethodHook {
  const score = config.method.score;
  // Per-token KL coefficients ride on the KL mask, normalised by the count of KL tokens; the
  // seq-mean-token-mean aggregation divides by each sequence's mask SUM instead, which would
  // turn the coefficients into weights of a weighted mean.
  if (config.loss.aggregation === "seq-mean-token-mean")
    throw new ConfigError("method score: per-token KL coefficients (beta1 on one turn, beta2 on another) need loss.aggregation token-mean, seq-mean-token-sum or seq-mean-token-sum-norm, not seq-mean-token-mean");
  const stopSequences = stopSequencesFor(tokenizer, score.turn1Stop);
  const instruction = tokenizer.encode(score.turn2Template.split("{instruction}").join(score.instruction), { addSpecialTokens: false });
  const prefixCache = policy.createPrefixCache();
  const kl = { beta1: score.beta1, beta2: score.beta2 };
  let stats = { turn1: [] as boolean[], turn2: [] as boolean[], reusedPromptTokens: 0, turn2PromptTokens: 0 };

  return {
    groupSize: config.rollout.samplesPerPrompt,
    // β_t rides on the KL mask; the loss multiplies by 1 (no KL at all: no reference needed)
    klCoef: score.beta1 > 0 || (score.stage === 1 && score.beta2 > 0) ? 1 : 0,
    rollout: { stopSequences, prefixCache },
    async buildGroups(groups: PromptRollouts[], step: number): Promise<GroupBuild[]> {
      const turnOne = groups.map((g) => g.samples.map((s) => turnOneTokens(s, stopSequences)));
      const requests = groups.flatMap((g, p) =>
        turnOne[p].map((y1, i) => ({ promptIds: Int32Array.from([...g.promptIds, ...y1, ...instruction]), n: 1, seed: rolloutSeed(g.seed, step, 7919 + i) })),
      );
      const { results, stats: generation } = await policy.generateWithStats(requests, rolloutSampling(config, tokenizer), { prefixCache });
      prefixCache.clear(); // the next step's turn 1 starts from new prompts: free the memory now
      stats.reusedPromptTokens += generation.reusedPromptTokens;
      stats.turn2PromptTokens += requests.reduce((n, r) => n + r.promptIds.length, 0);
      let next = 0;
      return groups.map((g, p) => {
        const rollouts = [];
        const samples = [];
        for (const [i, y1] of turnOne[p].entries()) {
          const y2 = results[next++][0].tokens;
          const r1 = answerMatches(g.example.answer, tokenizer.decode(y1, { skipSpecialTokens: true }));
          const r2 = answerMatches(g.example.answer, tokenizer.decode(y2, { skipSpecialTokens: true }));
          stats.turn1.push(r1);
          stats.turn2.push(r2);
          const returns = scoreTurnReturns(Number(r1), Number(r2), score.stage, score);
          const tokens = twoTurnTokens(y1, instruction, y2);
          const masks = scoreMasks(tokens, score.stage, kl);
          samples.push({ response: tokens.ids, lossMask: masks.lossMask, klMask: masks.klCoefficients, returns: [returns.turn1, returns.turn2], segmentOfToken: masks.turnOfToken });
          rollouts.push({ firstCorrect: r1, finalCorrect: r2, hasMarker: false, reward: returns.turn1 + returns.turn2, transition: correctionBucket(r1, r2) });
        }
        return { samples, rollouts, train: true };
      });
    },
    async finishStep() {
      const t1 = stats.turn1.map(Number), t2 = stats.turn2.map(Number);
      const metrics = {
        stage: score.stage,
        turn1Accuracy: mean(t1),
        turn2Accuracy: mean(t2),
        delta: mean(t2) - mean(t1),
        deltaIncorrectToCorrect: mean(t1.map((a, i) => Number(!a && t2[i] === 1))),
        deltaCorrectToIncorrect: mean(t1.map((a, i) => Number(a === 1 && !t2[i]))),
        /** share of turn-2 prompt tokens whose keys/values came from the prefix cache */
        turn2PrefixReuse: stats.turn2PromptTokens > 0 ? stats.reusedPromptTokens / stats.turn2PromptTokens : 0,
      };
      stats = { turn1: [], turn2: [], reusedPromptTokens: 0, turn2PromptTokens: 0 };
      return { metrics };
    },
    dispose: () => prefixCache.clear(),
  };
}
