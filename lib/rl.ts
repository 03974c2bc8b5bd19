/**
 * One RL step end to end (SPEC §1): prompts → n rollouts each (native sampler) → decode,
 * parse, reward → method hook (GRPO, or Octopus pairing and stage masks) → group
 * advantages → old and reference log-probs → mini-batch updates → metrics.
 */
import { dynamicSamplingKeep, groupAdvantages, overlongPenalty } from "./advantages";
import type { RunConfig } from "./config";
import type { DataCursor, Example } from "./data";
import type { DataParallel } from "./distributed";
import type { EvalMetrics } from "./eval/metrics";
import { extractAnswer } from "./grading/extract";
import { isEquivalent } from "./grading/verify";
import {
  correctionReward,
  formatReward,
  pairCorrectionRollouts,
  scoreCorrectionResponse,
  stageMasks,
  tokenizeCorrection,
  type CorrectionBucket,
  type ScoredCorrection,
} from "./methods/octopus";
import type { Model } from "./model";
import { encodePrompt } from "./prompts";
import type { GenerationResult } from "./sampling";
import type { TextTokenizer } from "./tokenizer";
import { PolicyTrainer, type TrainSequence } from "./training";

export interface RlSetup {
  config: RunConfig;
  policy: Model;
  /** the frozen reference, when some KL term is on */
  reference?: Model;
  tokenizer: TextTokenizer;
  trainer: PolicyTrainer;
  examples: Example[];
  cursor: DataCursor;
  /** data-parallel: this rank takes its share of each step's prompts; metrics are of all ranks */
  distributed?: DataParallel;
}

/** One line of metrics.jsonl. */
export interface StepMetrics {
  step: number;
  lr: number;
  loss: number;
  gradNorm: number;
  skipped: boolean;
  /** mean and standard deviation of the reward of the generated (original) samples */
  reward: number;
  rewardStd: number;
  /** first-attempt accuracy and final-answer accuracy of the generated samples */
  accuracyO1: number;
  accuracyFinal: number;
  markerRate: number;
  /** o1 → o2 transitions among generated samples that correct themselves */
  transitions: Record<CorrectionBucket, number>;
  /** augmented samples per bucket (Octopus) */
  augmented: Record<CorrectionBucket | "copy", number>;
  kl: number;
  clipFraction: number;
  entropy: number;
  responseLength: number;
  trainedSequences: number;
  /** groups dropped by dynamic sampling */
  droppedGroups: number;
  generatedTokens: number;
  generationTokensPerSecond: number;
  seconds: { generation: number; logprobs: number; training: number; total: number };
  /** held-out evaluation after this step (run.evalEvery; set by the training loop, not by rlStep) */
  eval?: EvalMetrics;
}

interface BuiltSample {
  response: Int32Array;
  lossMask: ArrayLike<number>;
  klMask: ArrayLike<number>;
  reward: number;
}

function zeroBuckets(): Record<CorrectionBucket, number> {
  return { w2c: 0, c2c: 0, c2w: 0, w2w: 0 };
}

const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

/** Per-step seed of prompt i: reproducible, and different across steps and prompts. */
export function rolloutSeed(runSeed: number, step: number, promptIndex: number): number {
  return ((runSeed * 1_000_003 + step * 10_007 + promptIndex * 101) >>> 0) % 2 ** 31;
}

export async function rlStep(setup: RlSetup, step: number): Promise<StepMetrics> {
  const { config, tokenizer } = setup;
  const start = process.hrtime.bigint();
  const elapsed = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
  const n = config.rollout.samplesPerPrompt;
  const octopus = config.method.name === "octopus" ? config.method.octopus : undefined;
  const eosId = tokenizer.eosTokenIds[0];

  // 1-2. Rollouts and rewards, one group per prompt; DAPO dynamic sampling refills the batch
  // with fresh prompts while groups whose rewards are all equal are dropped (at most 4 rounds).
  const prompt = { template: config.data.promptTemplate, chat: config.data.chat, chatTemplateVariables: config.data.chatTemplateVariables };
  const sequences: TrainSequence[] = [];
  const rewards: number[] = [];
  const originalRewards: number[] = [];
  const o1Correct: boolean[] = [], finalCorrect: boolean[] = [], withMarker: boolean[] = [];
  const transitions = zeroBuckets();
  const augmented: Record<CorrectionBucket | "copy", number> = { ...zeroBuckets(), copy: 0 };
  const groupSize = octopus?.augment ? 2 * n : n;
  const generated: GenerationResult[][] = [];
  let generationSeconds = 0;
  let droppedGroups = 0;
  let keptGroups = 0; // over all ranks
  for (let round = 0; round < (config.advantage.dynamicSampling ? 4 : 1); round++) {
    const wanted = config.rollout.promptsPerStep - keptGroups;
    if (wanted <= 0) break;
    // Every rank advances the cursor alike and takes its share of the prompts (whole groups); a
    // prompt's seeds come from its place in the step's batch, whatever the number of ranks.
    const drawn = setup.cursor.next(wanted).map((example, place) => ({ example, place }));
    const taken = setup.distributed ? setup.distributed.shard(drawn) : drawn;
    const examples = taken.map(({ example }) => setup.examples[example]);
    const prompts = examples.map((e) => encodePrompt(e, tokenizer, prompt));
    const generationStart = process.hrtime.bigint();
    const results: GenerationResult[][] = prompts.length === 0 ? [] : await setup.policy.generate(
      prompts.map((promptIds, i) => ({ promptIds, n, seed: rolloutSeed(config.run.seed, step, round * 1000 + taken[i].place) })),
      {
        temperature: config.rollout.temperature,
        topP: config.rollout.topP,
        topK: config.rollout.topK,
        minP: config.rollout.minP,
        maxNewTokens: config.rollout.maxNewTokens,
        eosTokenIds: tokenizer.eosTokenIds,
      },
    );
    generationSeconds += elapsed(generationStart);
    generated.push(...results);

    examples.forEach((example, p) => {
      const samples = results[p];
      const texts = samples.map((s) => tokenizer.decode(s.tokens, { skipSpecialTokens: true }));
      const isCorrect = (part: string) => {
        const answer = extractAnswer(part);
        return answer !== undefined && isEquivalent(example.answer, answer);
      };
      // DAPO overlong shaping: a soft penalty over the last `overlongCache` tokens of the budget.
      const overlong = (i: number) =>
        config.advantage.overlongCache > 0 ? overlongPenalty(samples[i].tokens.length, config.rollout.maxNewTokens, config.advantage.overlongCache) : 0;
      let built: BuiltSample[];
      const groupO1: boolean[] = [], groupFinal: boolean[] = [], groupMarker: boolean[] = [], groupOriginalRewards: number[] = [];
      const groupTransitions = zeroBuckets();
      const groupAugmented: Record<CorrectionBucket | "copy", number> = { ...zeroBuckets(), copy: 0 };
      if (!octopus) {
        built = samples.map((s, i) => {
          const correct = isCorrect(texts[i]);
          groupO1.push(correct);
          groupFinal.push(correct);
          groupMarker.push(false);
          const reward = (correct ? 1 : 0) + overlong(i);
          groupOriginalRewards.push(reward);
          return { response: s.tokens, lossMask: new Float32Array(s.tokens.length).fill(1), klMask: new Float32Array(s.tokens.length).fill(1), reward };
        });
      } else {
        const scored: ScoredCorrection[] = texts.map((t) => scoreCorrectionResponse(t, isCorrect, octopus.separator));
        scored.forEach((s, i) => {
          s.reward += overlong(i);
          groupO1.push(s.o1Correct);
          groupFinal.push(s.finalCorrect);
          groupMarker.push(s.hasMarker);
          groupOriginalRewards.push(s.reward);
          if (s.hasMarker) groupTransitions[s.o1Correct ? (s.o2Correct ? "c2c" : "c2w") : s.o2Correct ? "w2c" : "w2w"]++;
        });
        const maxLength = config.rollout.maxNewTokens;
        const buildOriginal = (i: number): BuiltSample => {
          const s = scored[i];
          const eos = samples[i].finishReason === "eos" ? eosId : undefined;
          const ids = tokenizeCorrection(tokenizer, s.o1Segment, octopus.separator, s.hasMarker ? s.o2Segment : undefined, eos, maxLength);
          const masks = stageMasks(ids, octopus.stage, { o1Correct: s.o1Correct, o2Correct: s.o2Correct });
          return { response: ids.ids, ...masks, reward: s.reward };
        };
        if (!octopus.augment) {
          built = scored.map((_, i) => buildOriginal(i));
        } else {
          const group = pairCorrectionRollouts(scored, { n, seed: rolloutSeed(config.run.seed, step, round * 1000 + taken[p].place) + 1, separator: octopus.separator });
          built = group.samples.map((sample) => {
            if (sample.kind !== "pair") {
              if (sample.kind === "copy") groupAugmented.copy++;
              return buildOriginal(sample.rolloutIndex);
            }
            groupAugmented[sample.bucket]++;
            const ids = tokenizeCorrection(tokenizer, sample.o1, octopus.separator, sample.o2, eosId, maxLength);
            const masks = stageMasks(ids, octopus.stage, { o1Correct: sample.o1Correct, o2Correct: sample.o2Correct });
            const reward = correctionReward({
              hasMarker: true, o1: sample.o1, o2: sample.o2, o1Correct: sample.o1Correct, o2Correct: sample.o2Correct,
              formatO1: formatReward(sample.o1, octopus.separator), formatO2: formatReward(sample.o2, octopus.separator),
            });
            return { response: ids.ids, ...masks, reward };
          });
        }
      }
      // Generated-sample statistics count every group, kept or not.
      o1Correct.push(...groupO1);
      finalCorrect.push(...groupFinal);
      withMarker.push(...groupMarker);
      originalRewards.push(...groupOriginalRewards);
      for (const k of Object.keys(transitions) as CorrectionBucket[]) transitions[k] += groupTransitions[k];
      const groupRewards = built.map((b) => b.reward);
      if (config.advantage.dynamicSampling && !dynamicSamplingKeep(groupRewards, groupRewards.length)[0]) {
        droppedGroups++;
        return;
      }
      for (const k of Object.keys(augmented) as (CorrectionBucket | "copy")[]) augmented[k] += groupAugmented[k];
      for (const b of built) {
        const promptIds = prompts[p];
        const tokens = new Int32Array(promptIds.length + b.response.length);
        tokens.set(promptIds);
        tokens.set(b.response, promptIds.length);
        const lossMask = new Float32Array(tokens.length), klMask = new Float32Array(tokens.length);
        lossMask.set(Array.from(b.lossMask), promptIds.length);
        klMask.set(Array.from(b.klMask), promptIds.length);
        sequences.push({ tokens, lossMask, klMask });
        rewards.push(b.reward);
      }
    });
    keptGroups = await totalOverRanks(setup, sequences.length / groupSize, "the kept groups");
  }

  // 3. Advantages per group (originals and augmented samples form one group).
  if (keptGroups === 0) throw new Error(`step ${step}: dynamic sampling dropped every group (all rewards equal in each); raise rollout.promptsPerStep or disable advantage.dynamicSampling`);
  const advantages = groupAdvantages(rewards, groupSize, config.advantage.estimator, { normStd: config.advantage.normStd });
  sequences.forEach((s, i) => (s.advantage = advantages[i]));

  // 4. KL terms: Octopus Stage I regularises o1 only (its own β); otherwise the configured KL on the loss tokens.
  const stageOneKl = octopus?.stage === 1 ? octopus.o1KlCoef : 0;
  const klCoef = octopus?.stage === 1 ? stageOneKl : config.loss.klCoef;
  if (!(octopus?.stage === 1)) sequences.forEach((s) => (s.klMask = s.lossMask));
  const usable = sequences.filter((s) => s.tokens.length >= 2);
  const logprobStart = process.hrtime.bigint();
  const temperature = config.rollout.temperature > 0 ? config.rollout.temperature : 1;
  const lpOptions = { microBatchSize: config.training.microBatchSize, temperature, chunkSize: config.training.logprobChunkSize };
  const old = await PolicyTrainer.logprobs(setup.policy, usable.map((s) => s.tokens), lpOptions);
  usable.forEach((s, i) => (s.oldLogprobs = old[i]));
  if (klCoef > 0) {
    if (!setup.reference) throw new Error("a KL term is on but no reference model was loaded");
    const ref = await PolicyTrainer.logprobs(setup.reference, usable.map((s) => s.tokens), lpOptions);
    usable.forEach((s, i) => (s.refLogprobs = ref[i]));
  }
  const logprobSeconds = elapsed(logprobStart);

  // 5. Updates: the batch split into mini-batches, one optimizer step each.
  const trainingStart = process.hrtime.bigint();
  const loss = { ...config.loss, klCoef };
  const miniBatches = Math.min(config.training.miniBatches, await totalOverRanks(setup, usable.length, "the trained sequences"));
  const reports = [];
  for (let m = 0; m < miniBatches; m++) {
    const part = usable.filter((_, i) => i % miniBatches === m);
    reports.push(await setup.trainer.trainStep(part, { objective: "policy", loss, maxLength: config.rollout.maxNewTokens }));
  }
  const trainingSeconds = elapsed(trainingStart);

  const last = reports[reports.length - 1];
  const meanReward = mean(originalRewards);
  const generatedTokens = generated.flat().reduce((a, s) => a + s.tokens.length, 0);
  const metrics: StepMetrics = {
    step,
    lr: last.lr,
    loss: mean(reports.map((r) => r.loss)),
    gradNorm: last.gradNorm,
    skipped: reports.some((r) => r.skipped),
    reward: meanReward,
    rewardStd: Math.sqrt(mean(originalRewards.map((r) => (r - meanReward) ** 2))),
    accuracyO1: mean(o1Correct.map(Number)),
    accuracyFinal: mean(finalCorrect.map(Number)),
    markerRate: mean(withMarker.map(Number)),
    transitions,
    augmented,
    kl: mean(reports.map((r) => r.meanKl)),
    clipFraction: mean(reports.map((r) => r.clipFraction)),
    entropy: mean(reports.map((r) => r.meanEntropy)),
    responseLength: generatedTokens / Math.max(1, generated.flat().length),
    trainedSequences: usable.length,
    droppedGroups,
    generatedTokens,
    generationTokensPerSecond: generatedTokens / generationSeconds,
    seconds: { generation: generationSeconds, logprobs: logprobSeconds, training: trainingSeconds, total: elapsed(start) },
  };
  return setup.distributed ? metricsOverRanks(setup.distributed, metrics, generated.flat().length) : metrics;
}

async function totalOverRanks(setup: RlSetup, value: number, what: string): Promise<number> {
  return setup.distributed ? (await setup.distributed.sum([value], what))[0] : value;
}

/**
 * The step's metrics over all ranks, from each rank's metrics of its `samples` generated samples:
 * means weighted by samples, counts summed, times the slowest rank's. The loss statistics and the
 * optimizer's numbers are already the step's (PolicyTrainer reduces them).
 */
async function metricsOverRanks(dp: DataParallel, local: StepMetrics, samples: number): Promise<StepMetrics> {
  const buckets = Object.keys(local.transitions) as CorrectionBucket[];
  const augmentedKeys = Object.keys(local.augmented) as (CorrectionBucket | "copy")[];
  const weighted = [local.reward, local.rewardStd ** 2 + local.reward ** 2, local.accuracyO1, local.accuracyFinal, local.markerRate].map((m) => m * samples);
  const counts = [samples, local.generatedTokens, local.trainedSequences, local.droppedGroups, ...buckets.map((b) => local.transitions[b]), ...augmentedKeys.map((k) => local.augmented[k])];
  const totals = await dp.sum([...weighted, ...counts], "the step metrics");
  const slowest = await dp.max([local.seconds.generation, local.seconds.logprobs, local.seconds.training, local.seconds.total], "the step times");
  const n = Math.max(1, totals[5]);
  const [reward, rewardSquare, accuracyO1, accuracyFinal, markerRate] = totals.slice(0, 5).map((t) => t / n);
  const [, generatedTokens, trainedSequences, droppedGroups] = totals.slice(5, 9);
  const transitions = { ...local.transitions }, augmented = { ...local.augmented };
  buckets.forEach((b, i) => (transitions[b] = totals[9 + i]));
  augmentedKeys.forEach((k, i) => (augmented[k] = totals[9 + buckets.length + i]));
  return {
    ...local,
    reward,
    rewardStd: Math.sqrt(Math.max(0, rewardSquare - reward ** 2)),
    accuracyO1,
    accuracyFinal,
    markerRate,
    transitions,
    augmented,
    responseLength: generatedTokens / n,
    trainedSequences,
    droppedGroups,
    generatedTokens,
    generationTokensPerSecond: generatedTokens / slowest[0],
    seconds: { generation: slowest[0], logprobs: slowest[1], training: slowest[2], total: slowest[3] },
  };
}
