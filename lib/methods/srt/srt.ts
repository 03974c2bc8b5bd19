/**
 * SRT — self-rewarding training by majority vote (docs/methods.md §6.4), as pure functions: pseudo-label
 * rewards (hard and soft), the majority-share filter, label accuracy against hidden labels,
 * the dominant answer across prompts, the collapse alarm, and early stopping.
 *
 * The pseudo-label of a prompt is the majority answer of its rollouts (lib/grading/majority.ts:
 * only parseable answers vote, equivalence by the verifier, deterministic tie-break).
 */
import { majorityVote, type AnswerEquivalence, type MajorityVote } from "../../grading/majority";
import { isEquivalent } from "../../grading/verify";

export type SrtRewardKind = "hard" | "soft";

/**
 * Per rollout: hard = 1 when its answer is in the majority cluster, else 0; soft = its answer's
 * vote share (votes of its cluster / all rollouts). Unparseable answers get 0 either way.
 * With a fixed label (`label` given, e.g. from the base model) the reward is agreement with it.
 */
export function pseudoLabelRewards(
  answers: ReadonlyArray<string | undefined>,
  kind: SrtRewardKind,
  options: { vote?: MajorityVote; label?: string; equivalent?: AnswerEquivalence } = {},
): number[] {
  const equivalent = options.equivalent ?? isEquivalent;
  if (options.label !== undefined) {
    const label = options.label;
    if (kind === "soft") throw new RangeError("soft SRT rewards are vote shares of the current rollouts; a fixed label takes the hard reward");
    return answers.map((a) => (a !== undefined && a.trim() !== "" && (a === label || equivalent(label, a)) ? 1 : 0));
  }
  const vote = options.vote ?? majorityVote(answers, equivalent);
  if (vote.clusterOf.length !== answers.length) throw new RangeError(`the vote covers ${vote.clusterOf.length} answers, not ${answers.length}`);
  return vote.clusterOf.map((c) => {
    if (c < 0) return 0;
    if (kind === "hard") return c === 0 ? 1 : 0;
    return vote.clusters[c].members.length / answers.length;
  });
}

/** The majority-share filter: a prompt trains only when its majority share reaches the threshold. */
export function keepByMajorityShare(vote: Pick<MajorityVote, "share" | "label">, threshold: number): boolean {
  return vote.label !== undefined && vote.share >= threshold;
}

/** Fraction of prompts whose pseudo-label equals the hidden gold label (no label counts as wrong). */
export function labelAccuracy(labels: ReadonlyArray<string | undefined>, gold: ReadonlyArray<string>, equivalent: AnswerEquivalence = isEquivalent): number {
  if (labels.length !== gold.length) throw new RangeError(`${labels.length} labels for ${gold.length} gold answers`);
  if (labels.length === 0) return 0;
  return labels.filter((l, i) => l !== undefined && equivalent(gold[i], l)).length / labels.length;
}

/**
 * How much one answer dominates ACROSS prompts: the share of prompts whose pseudo-label is the
 * most common label of the batch. Different problems rarely share an answer; a model that
 * collapsed to a constant output makes this near 1.
 */
export function dominantLabelShare(labels: ReadonlyArray<string | undefined>, equivalent: AnswerEquivalence = isEquivalent): { answer?: string; share: number } {
  const vote = majorityVote(labels, equivalent);
  return { answer: vote.label, share: vote.share };
}

export interface CollapseSignals {
  /** mean pseudo-reward of the step's rollouts */
  pseudoReward: number;
  /** the step's mean KL to the reference */
  kl: number;
  /** dominantLabelShare of the step */
  dominantShare: number;
}

export interface CollapseAlarmOptions {
  /** pseudo-reward at or above this is "near 1" */
  rewardAbove: number;
  /** KL spike: current KL ≥ spikeFactor × the median KL of the previous `window` steps … */
  klSpikeFactor: number;
  /** … and at least this large (a spike from 1e-9 to 1e-8 is noise) */
  klMin: number;
  window: number;
  /** one answer is the label of at least this share of prompts */
  dominantShareAbove: number;
}

export const DEFAULT_COLLAPSE_ALARM: CollapseAlarmOptions = { rewardAbove: 0.95, klSpikeFactor: 3, klMin: 1e-3, window: 5, dominantShareAbove: 0.5 };

export interface CollapseVerdict {
  alarm: boolean;
  rewardNearOne: boolean;
  klSpike: boolean;
  dominantAnswer: boolean;
}

/**
 * The published SRT failure (reward → 1, KL spikes, one constant answer, accuracy → 0) on a
 * trace of steps, oldest first; the verdict concerns the last step. All three signals must
 * hold: each alone is normal (a model that learned the task also earns pseudo-reward near 1).
 * Without `window` previous steps the KL baseline is the steps there are; with none, no spike.
 */
export function collapseAlarm(trace: ReadonlyArray<CollapseSignals>, options: CollapseAlarmOptions = DEFAULT_COLLAPSE_ALARM): CollapseVerdict {
  if (trace.length === 0) throw new RangeError("collapseAlarm needs at least the current step");
  const current = trace[trace.length - 1];
  const previous = trace.slice(Math.max(0, trace.length - 1 - options.window), -1).map((s) => s.kl).sort((a, b) => a - b);
  const median = previous.length === 0 ? NaN : previous.length % 2 ? previous[(previous.length - 1) / 2] : (previous[previous.length / 2 - 1] + previous[previous.length / 2]) / 2;
  const rewardNearOne = current.pseudoReward >= options.rewardAbove;
  const klSpike = previous.length > 0 && current.kl >= options.klMin && current.kl >= options.klSpikeFactor * median;
  const dominantAnswer = current.dominantShare >= options.dominantShareAbove;
  return { alarm: rewardNearOne && klSpike && dominantAnswer, rewardNearOne, klSpike, dominantAnswer };
}

/**
 * Early stopping on a labelled split: stop once the accuracy has not improved on its best for
 * `patience` evaluations in a row. Pure: the history of accuracies in, the decision out.
 */
export function earlyStopping(accuracies: ReadonlyArray<number>, patience: number, minImprovement = 0): { stop: boolean; best: number; bestIndex: number; sinceBest: number } {
  if (!Number.isInteger(patience) || patience < 1) throw new RangeError(`early-stopping patience ${patience} must be a positive integer`);
  let best = -Infinity, bestIndex = -1;
  accuracies.forEach((a, i) => {
    if (a > best + minImprovement || bestIndex < 0) {
      best = a;
      bestIndex = i;
    }
  });
  const sinceBest = bestIndex < 0 ? 0 : accuracies.length - 1 - bestIndex;
  return { stop: sinceBest >= patience, best, bestIndex, sinceBest };
}
