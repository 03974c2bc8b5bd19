/**
 * SRT rollouts (docs/methods.md §6.4) and Octopus + SRT: no labels in the reward — each prompt's
 * pseudo-label is the majority answer of its rollouts (or, with fixedLabels, of the base
 * model's rollouts, computed once per prompt). The collapse guard: the majority-share filter,
 * the collapse alarm, early stopping on a small labelled split, and the accuracy of the
 * pseudo-labels against the hidden labels whenever the data has them.
 */
import { evaluateModel } from "../../eval/evaluate";
import { extractAnswer } from "../../grading/extract";
import { majorityVote, type MajorityVote } from "../../grading/majority";
import { isEquivalent } from "../../grading/verify";
import type { RunConfig } from "../../rl/config";
import type { Example } from "../../rl/data";
import { encodePrompt, promptOptions } from "../../rl/prompts";
import { mean } from "../../util/stats";
import { overlongShaping } from "../grpo/hook";
import { answerMatches, plainSample, rolloutSampling, type GroupBuild, type HookContext, type MethodHook, type PromptRollouts } from "../hook";
import { buildOctopusGroup } from "../octopus/hook";
import { correctionBucket, parseCorrectionResponse, scoreCorrectionResponse } from "../octopus/octopus";
import { collapseAlarm, dominantLabelShare, earlyStopping, keepByMajorityShare, labelAccuracy, pseudoLabelRewards, type CollapseSignals } from "./srt";

/** A stable 31-bit seed from an example id (fixed labels must not depend on when a prompt is first seen). */
function idSeed(runSeed: number, id: string): number {
  let h = 0x811c9dc5 ^ runSeed;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % 2 ** 31;
}

const hasGold = (e: Example) => e.answer.trim() !== "";

/**
 * Octopus + SRT votes on the FINAL answers of the n generated rollouts: o2's box when the
 * response corrects itself, else o1's (an o2 without a box is unparseable: no vote). One vote
 * per rollout, on the answer the model commits to. Voting over o1 and o2 together would give a
 * rollout two votes, and a first attempt the model itself overrode would still count; voting
 * over o1 only would label with the answers the correction is meant to improve on.
 */
export function octopusFinalAnswer(text: string, separator: string): string | undefined {
  const parsed = parseCorrectionResponse(text, separator);
  if (!parsed.hasMarker) return extractAnswer(parsed.o1);
  return parsed.o2HasBox ? extractAnswer(parsed.o2 ?? "") : undefined;
}

/** Pseudo-labels, the filter and the collapse guard shared by srt and octopus-srt. */
class SelfLabelling {
  private readonly fixed = new Map<string, MajorityVote>();
  private readonly trace: CollapseSignals[] = [];
  private readonly accuracies: number[] = [];
  private step = { labels: [] as (string | undefined)[], gold: [] as string[], shares: [] as number[], pseudoRewards: [] as number[], filtered: 0, groups: 0 };

  constructor(private readonly context: HookContext, private readonly answerOf: (text: string) => string | undefined) {}

  /** The vote that labels each group: this step's rollouts, or the base model's (fixedLabels). */
  async votes(groups: PromptRollouts[]): Promise<MajorityVote[]> {
    const { config, reference, tokenizer } = this.context;
    if (!config.method.srt.fixedLabels) return groups.map((g) => majorityVote(g.texts.map(this.answerOf)));
    const unseen = groups.filter((g, i) => !this.fixed.has(g.example.id) && groups.findIndex((h) => h.example.id === g.example.id) === i);
    if (unseen.length > 0) {
      if (!reference) throw new Error("srt.fixedLabels needs the base model (the reference), which was not loaded");
      const results = await reference.generate(
        unseen.map((g) => ({ promptIds: g.promptIds, n: config.rollout.samplesPerPrompt, seed: idSeed(config.run.seed, g.example.id) })),
        rolloutSampling(config, tokenizer),
      );
      unseen.forEach((g, i) => this.fixed.set(g.example.id, majorityVote(results[i].map((s) => this.answerOf(tokenizer.decode(s.tokens, { skipSpecialTokens: true }))))));
    }
    return groups.map((g) => this.fixed.get(g.example.id) as MajorityVote);
  }

  /** Records a group's label and decides whether it trains (the majority-share filter). */
  record(group: PromptRollouts, vote: MajorityVote, pseudoRewards: number[]): boolean {
    const keep = keepByMajorityShare(vote, this.context.config.method.srt.majorityThreshold);
    this.step.groups++;
    if (!keep) this.step.filtered++;
    this.step.shares.push(vote.share);
    this.step.pseudoRewards.push(...pseudoRewards);
    this.step.labels.push(vote.label);
    this.step.gold.push(group.example.answer);
    return keep;
  }

  /** The collapse trace and the early-stopping history of the steps a resumed run already took. */
  restore(previous: ReadonlyArray<{ kl: number; methodMetrics?: Record<string, unknown> }>): void {
    for (const line of previous) {
      const m = line.methodMetrics;
      if (!m) continue;
      this.trace.push({ pseudoReward: m.pseudoReward as number, kl: line.kl, dominantShare: m.dominantAnswerShare as number });
      const early = m.earlyStopping as { accuracy: number } | undefined;
      if (early) this.accuracies.push(early.accuracy);
    }
  }

  async finish(stepIndex: number, kl: number): Promise<{ metrics: Record<string, unknown>; stop?: string }> {
    const { config, policy, tokenizer, evalExamples } = this.context;
    const srt = config.method.srt;
    const s = this.step;
    const labelled = s.gold.map((g) => g.trim() !== "");
    const dominant = dominantLabelShare(s.labels);
    this.trace.push({ pseudoReward: mean(s.pseudoRewards), kl, dominantShare: dominant.share });
    const verdict = collapseAlarm(this.trace, srt.collapse);
    const metrics: Record<string, unknown> = {
      pseudoReward: mean(s.pseudoRewards),
      majorityShare: mean(s.shares),
      filteredGroups: s.filtered,
      trainedGroups: s.groups - s.filtered,
      labelAccuracy: labelled.some(Boolean) ? labelAccuracy(s.labels.filter((_, i) => labelled[i]), s.gold.filter((_, i) => labelled[i])) : null,
      dominantAnswer: dominant.answer ?? null,
      dominantAnswerShare: dominant.share,
      collapseAlarm: verdict.alarm,
      collapseSignals: { rewardNearOne: verdict.rewardNearOne, klSpike: verdict.klSpike, dominantAnswer: verdict.dominantAnswer },
    };
    this.step = { labels: [], gold: [], shares: [], pseudoRewards: [], filtered: 0, groups: 0 };
    let stop: string | undefined;
    if (verdict.alarm && srt.collapse.stop) stop = `SRT collapse alarm at step ${stepIndex}: pseudo-reward ${metrics.pseudoReward}, KL spike, answer '${dominant.answer}' labels ${(100 * dominant.share).toFixed(0)}% of prompts`;
    const every = srt.earlyStopping.every;
    if (every > 0 && stepIndex % every === 0) {
      const split = (evalExamples ?? []).filter(hasGold).slice(0, srt.earlyStopping.examples);
      if (split.length === 0) throw new Error("method.srt.earlyStopping needs a labelled split: set data.eval (examples with answers)");
      const evaluation = await evaluateModel(policy, tokenizer, split, {
        prompt: promptOptions(config),
        separator: config.method.octopus.separator,
        maxNewTokens: config.rollout.maxNewTokens,
      });
      this.accuracies.push(evaluation.metrics.accT2);
      const decision = earlyStopping(this.accuracies, srt.earlyStopping.patience);
      metrics.earlyStopping = { accuracy: evaluation.metrics.accT2, best: decision.best, evaluations: this.accuracies.length, evaluationsSinceBest: decision.sinceBest };
      if (decision.stop && !stop) stop = `SRT early stopping at step ${stepIndex}: labelled-split accuracy ${decision.best.toFixed(3)} has not improved for ${decision.sinceBest} evaluations`;
    }
    return { metrics, stop };
  }
}

export function srtHook(context: HookContext): MethodHook {
  const { config } = context;
  const labelling = new SelfLabelling(context, extractAnswer);
  return {
    groupSize: config.rollout.samplesPerPrompt,
    klCoef: config.loss.klCoef,
    rollout: {},
    async buildGroups(groups) {
      const votes = await labelling.votes(groups);
      return groups.map((g, p): GroupBuild => {
        const answers = g.texts.map(extractAnswer);
        const vote = votes[p];
        // With fixed labels the reward is agreement with the base model's label (hard).
        const pseudo = config.method.srt.fixedLabels
          ? pseudoLabelRewards(answers, "hard", { label: vote.label ?? "" })
          : pseudoLabelRewards(answers, config.method.srt.reward, { vote });
        const train = labelling.record(g, vote, pseudo);
        const rollouts = g.texts.map((text, i) => {
          // accuracy fields report the hidden labels (when the data has them): the true progress
          const correct = hasGold(g.example) && answerMatches(g.example.answer, text);
          return { firstCorrect: correct, finalCorrect: correct, hasMarker: false, reward: pseudo[i] + overlongShaping(config, g.samples[i].tokens.length) };
        });
        return { samples: g.samples.map((s, i) => plainSample(s.tokens, rollouts[i].reward)), rollouts, train };
      });
    },
    finishStep: (step, update) => labelling.finish(step, update.kl),
    restore: (previous) => labelling.restore(previous),
    dispose: () => {},
  };
}

export function octopusSrtHook(context: HookContext, klCoef: number): MethodHook {
  const { config, tokenizer } = context;
  const separator = config.method.octopus.separator;
  const labelling = new SelfLabelling(context, (text) => octopusFinalAnswer(text, separator));
  return {
    groupSize: config.method.octopus.augment ? 2 * config.rollout.samplesPerPrompt : config.rollout.samplesPerPrompt,
    klCoef,
    rollout: {},
    async buildGroups(groups) {
      const votes = await labelling.votes(groups);
      return groups.map((g, p): GroupBuild => {
        const label = votes[p].label;
        const agrees = (answer: string | undefined) => label !== undefined && answer !== undefined && (answer === label || isEquivalent(label, answer));
        const build = buildOctopusGroup(config, tokenizer, g, (part) => agrees(extractAnswer(part)));
        const train = labelling.record(g, votes[p], g.texts.map((t) => Number(agrees(octopusFinalAnswer(t, separator)))));
        // The reward used the pseudo-label; the accuracy fields report the hidden labels.
        const rollouts = build.rollouts.map((r, i) => {
          if (!hasGold(g.example)) return { ...r, firstCorrect: false, finalCorrect: false, transition: undefined };
          const gold = scoreCorrectionResponse(g.texts[i], (part) => answerMatches(g.example.answer, part), separator);
          return { ...r, firstCorrect: gold.o1Correct, finalCorrect: gold.finalCorrect, transition: gold.hasMarker ? correctionBucket(gold.o1Correct, gold.o2Correct === true) : undefined };
        });
        return { ...build, rollouts, train };
      });
    },
    finishStep: (step, update) => labelling.finish(step, update.kl),
    restore: (previous) => labelling.restore(previous),
    dispose: () => {},
  };
}
