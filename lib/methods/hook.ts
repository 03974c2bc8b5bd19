/**
 * The method hook of one RL step (docs/methods.md §1: "method hook: Octopus pairing / SCoRe turn 2 /
 * Trust-GRPO weighting / SRT majority label"). lib/rl/step.ts generates the rollouts of a batch of
 * prompts and hands them here; a hook turns each prompt's rollouts into one advantage group of
 * training samples (tokens, per-token loss and KL masks, per-turn returns) plus the statistics
 * of the generated samples. The pure method logic lives in lib/methods/; hooks glue it to the
 * engine (a second turn, a judge, a base model).
 */
import type { Model } from "../engine/model";
import type { GenerationResult, PrefixCache } from "../engine/sampling";
import type { TextTokenizer } from "../engine/tokenizer";
import { extractAnswer } from "../grading/extract";
import { isEquivalent } from "../grading/verify";
import type { RunConfig } from "../rl/config";
import type { Example } from "../rl/data";
import type { CorrectionBucket } from "./octopus/octopus";

/** The n rollouts of one prompt. */
export interface PromptRollouts {
  example: Example;
  promptIds: Int32Array;
  samples: GenerationResult[];
  /** decoded samples, special tokens skipped */
  texts: string[];
  /** seeds this group's own randomness (pairing order, turn-2 sampling) */
  seed: number;
}

/** One member of an advantage group. Per-token arrays cover the response (what follows promptIds). */
export interface GroupSample {
  response: Int32Array;
  lossMask: ArrayLike<number>;
  /** the weight of the KL penalty per token: the loss applies hook.klCoef × klMask[t] */
  klMask: ArrayLike<number>;
  /** one return per segment (turn); advantages are taken per segment over the group */
  returns: number[];
  /** per response token: its segment (index into returns); absent = every token is segment 0 */
  segmentOfToken?: Uint8Array;
}

/** What a generated sample did: first attempt, final answer (graded against the gold label). */
export interface RolloutOutcome {
  firstCorrect: boolean;
  finalCorrect: boolean;
  hasMarker: boolean;
  reward: number;
  /** the first → final transition of a sample that made two attempts */
  transition?: CorrectionBucket;
}

export interface GroupBuild {
  samples: GroupSample[];
  /** one per generated rollout */
  rollouts: RolloutOutcome[];
  /** augmented samples per bucket (Octopus) */
  augmented?: Record<CorrectionBucket | "copy", number>;
  /** false: the method leaves this group out of training (SRT majority-share filter) */
  train: boolean;
}

export interface StepEnd {
  /** method-specific numbers for the StepMetrics line */
  metrics?: Record<string, unknown>;
  /** set: the run ends after this step (with a checkpoint), for this reason */
  stop?: string;
}

export interface MethodHook {
  /** samples per advantage group */
  readonly groupSize: number;
  /** β of the loss's KL term (0 = none); GroupSample.klMask weights it per token */
  readonly klCoef: number;
  /** extra options of the turn-1 rollouts (stop sequences; a prefix cache a second turn continues from) */
  readonly rollout: { stopSequences?: number[][]; prefixCache?: PrefixCache };
  /** the groups of a batch of prompts, in order */
  buildGroups(groups: PromptRollouts[], step: number): Promise<GroupBuild[]>;
  /** after the update: the step's method metrics; may end the run */
  finishStep(step: number, update: { kl: number }): Promise<StepEnd>;
  /** a resumed run: the state kept across steps, rebuilt from the metrics lines of the steps already done */
  restore?(previous: ReadonlyArray<{ kl: number; methodMetrics?: Record<string, unknown> }>): void;
  dispose(): void;
}

export interface HookContext {
  config: RunConfig;
  policy: Model;
  /** the frozen reference (the starting model), when some KL term or a base-model label needs it */
  reference?: Model;
  tokenizer: TextTokenizer;
  /** labelled examples for early stopping (data.eval) */
  evalExamples?: Example[];
}

/** True when `text`'s final answer (extractAnswer) is equivalent to `reference`. */
export function answerMatches(reference: string, text: string): boolean {
  const answer = extractAnswer(text);
  return answer !== undefined && isEquivalent(reference, answer);
}

/** The sampling parameters of the run's rollouts. */
export function rolloutSampling(config: RunConfig, tokenizer: TextTokenizer) {
  return {
    temperature: config.rollout.temperature,
    topP: config.rollout.topP,
    topK: config.rollout.topK,
    minP: config.rollout.minP,
    maxNewTokens: config.rollout.maxNewTokens,
    eosTokenIds: tokenizer.eosTokenIds,
  };
}

/** A response trained as generated: loss and KL on every token, one return. */
export function plainSample(tokens: Int32Array, reward: number): GroupSample {
  return { response: tokens, lossMask: new Float32Array(tokens.length).fill(1), klMask: new Float32Array(tokens.length).fill(1), returns: [reward] };
}
