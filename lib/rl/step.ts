/**
 * One RL step end to end (docs/methods.md §1): prompts → n rollouts each (native sampler) → method hook
 * (rewards; Octopus pairing and stage masks, SCoRe's second turn, Trust-GRPO's judge, SRT's
 * majority labels: lib/methods/) → group advantages → old and reference log-probs →
 * mini-batch updates → metrics.
 */
import type { DataParallel } from "../engine/distributed";
import { learningRate } from "../engine/lr-schedule";
import type { Model } from "../engine/model";
import type { GenerationResult } from "../engine/sampling";
import type { TextTokenizer } from "../engine/tokenizer";
import { PolicyTrainer, type StepReport, type TrainSequence } from "../engine/trainer";
import type { EvalMetrics } from "../eval/metrics";
import { rolloutSampling, type GroupBuild, type GroupSample, type MethodHook, type PromptRollouts, type RolloutOutcome, type StepEnd } from "../methods";
import type { CorrectionBucket } from "../methods/octopus/octopus";
import { rolloutSeed } from "../util/random";
import { mean } from "../util/stats";
import { dynamicSamplingKeep, groupAdvantages } from "./advantages";
import type { RunConfig } from "./config";
import type { DataCursor, Example } from "./data";
import { encodePrompt, promptOptions } from "./prompts";

export { rolloutSeed };

export interface RlSetup {
  config: RunConfig;
  policy: Model;
  /** the frozen reference, when some KL term (or a base-model label) needs it */
  reference?: Model;
  tokenizer: TextTokenizer;
  trainer: PolicyTrainer;
  examples: Example[];
  cursor: DataCursor;
  /** the method of config.method.name (createMethodHook in lib/methods/index.ts) */
  method: MethodHook;
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
  /** first-attempt accuracy and final-answer accuracy of the generated samples (SCoRe: turn 1 and turn 2) */
  accuracyO1: number;
  accuracyFinal: number;
  markerRate: number;
  /** first → final transitions among generated samples that make two attempts */
  transitions: Record<CorrectionBucket, number>;
  /** augmented samples per bucket (Octopus) */
  augmented: Record<CorrectionBucket | "copy", number>;
  /** mean KL per KL token; with per-token KL coefficients (SCoRe) the β-weighted mean Σβ_t·KL_t / Σβ_t */
  kl: number;
  clipFraction: number;
  entropy: number;
  responseLength: number;
  trainedSequences: number;
  /** groups dropped by dynamic sampling */
  droppedGroups: number;
  generatedTokens: number;
  generationTokensPerSecond: number;
  /** generation: the rollouts; method: the hook (SCoRe's second turn, Trust-GRPO's judge, SRT's base-model labels) */
  seconds: { generation: number; method: number; logprobs: number; training: number; total: number };
  /** numbers of the method (SCoRe per-turn accuracies, Trust-GRPO γ and judge, SRT labels and alarm) */
  methodMetrics?: Record<string, unknown>;
  /** held-out evaluation after this step (run.evalEvery; set by the training loop, not by rlStep) */
  eval?: EvalMetrics;
  /** set when the method ended the run after this step (SRT early stopping or collapse alarm) */
  stopReason?: string;
}

function zeroBuckets(): Record<CorrectionBucket, number> {
  return { w2c: 0, c2c: 0, c2w: 0, w2w: 0 };
}

/** prompt ⊕ response, the response's masks after the prompt's zeros (the prompt gets no loss and no KL). */
function trainSequence(promptIds: Int32Array, sample: GroupSample): TrainSequence {
  const tokens = new Int32Array(promptIds.length + sample.response.length);
  tokens.set(promptIds);
  tokens.set(sample.response, promptIds.length);
  const lossMask = new Float32Array(tokens.length), klMask = new Float32Array(tokens.length);
  lossMask.set(Array.from(sample.lossMask), promptIds.length);
  klMask.set(Array.from(sample.klMask), promptIds.length);
  return { tokens, lossMask, klMask };
}

/** A group trains unless dynamic sampling drops it: every return channel constant across the group. */
function keepForDynamicSampling(samples: GroupSample[]): boolean {
  const channels = Math.max(...samples.map((s) => s.returns.length));
  return Array.from({ length: channels }, (_, k) => dynamicSamplingKeep(samples.map((s) => s.returns[k] ?? 0), samples.length)[0]).some(Boolean);
}

/**
 * Advantages per group and per return channel (one channel: the sequence advantage; SCoRe's
 * two turns: one advantage per token, from its turn's channel).
 */
export function assignAdvantages(sequences: TrainSequence[], samples: GroupSample[], promptLengths: number[], groupSize: number, config: RunConfig): void {
  const channels = Math.max(...samples.map((s) => s.returns.length));
  const perChannel = Array.from({ length: channels }, (_, k) =>
    groupAdvantages(samples.map((s) => s.returns[k] ?? 0), groupSize, config.advantage.estimator, { normStd: config.advantage.normStd }),
  );
  sequences.forEach((sequence, i) => {
    const segments = samples[i].segmentOfToken;
    if (channels === 1 || !segments) {
      sequence.advantage = perChannel[0][i];
      return;
    }
    const advantage = new Float32Array(sequence.tokens.length);
    segments.forEach((k, t) => (advantage[promptLengths[i] + t] = perChannel[k][i]));
    sequence.advantage = advantage;
  });
}

const elapsed = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;

/** `run`'s result and its seconds. */
async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  const start = process.hrtime.bigint();
  const result = await run();
  return [result, elapsed(start)];
}

/** What the step collected to train on (steps 1-2): the kept groups' sequences and every rollout's statistics. */
interface CollectedGroups {
  sequences: TrainSequence[];
  samples: GroupSample[];
  promptLengths: number[];
  /** every generated sample's outcome, kept or not */
  rollouts: RolloutOutcome[];
  augmented: Record<CorrectionBucket | "copy", number>;
  generated: GenerationResult[][];
  generationSeconds: number;
  methodSeconds: number;
  droppedGroups: number;
  /** over all ranks, left-out groups included */
  keptGroups: number;
}

/**
 * One RL step: the pipeline of docs/methods.md §1, a phase per function below. Each rank runs it on
 * its share of the prompts; the metrics are the step's, over all ranks.
 */
export async function rlStep(setup: RlSetup, step: number): Promise<StepMetrics> {
  const start = process.hrtime.bigint();
  const groups = await collectGroups(setup, step);
  assignStepAdvantages(setup, step, groups);
  const [usable, logprobSeconds] = await timed(() => oldAndReferenceLogprobs(setup, groups.sequences));
  const [reports, trainingSeconds] = await timed(() => updatePolicy(setup, usable));
  const kl = mean(reports.map((r) => r.meanKl));
  // The method's end of the step (its metrics; SRT may stop the run), then the step's numbers.
  const end = await setup.method.finishStep(step, { kl });
  const metrics = stepMetrics(setup, step, groups, usable, reports, { kl, end, logprobSeconds, trainingSeconds, start });
  return setup.distributed ? metricsOverRanks(setup.distributed, metrics, groups.generated.flat().length, setup.config.loss.entropyCoef === 0) : metrics;
}

/**
 * 1-2. Rollouts, then the method turns each prompt's rollouts into one advantage group. DAPO
 * dynamic sampling refills the batch with fresh prompts while groups whose rewards are all
 * equal are dropped (at most 4 rounds).
 */
async function collectGroups(setup: RlSetup, step: number): Promise<CollectedGroups> {
  const { config, method } = setup;
  const collected: CollectedGroups = {
    sequences: [], samples: [], promptLengths: [], rollouts: [], augmented: { ...zeroBuckets(), copy: 0 }, generated: [],
    generationSeconds: 0, methodSeconds: 0, droppedGroups: 0, keptGroups: 0,
  };
  let groupsLeftOut = 0;
  for (let round = 0; round < (config.advantage.dynamicSampling ? 4 : 1); round++) {
    const wanted = config.rollout.promptsPerStep - collected.keptGroups;
    if (wanted <= 0) break;
    const { prompts, builds } = await rolloutRound(setup, step, round, wanted, collected);
    builds.forEach((build, p) => {
      // Generated-sample statistics count every group, kept or not.
      collected.rollouts.push(...build.rollouts);
      if (!build.train) {
        groupsLeftOut++;
        return;
      }
      if (config.advantage.dynamicSampling && !keepForDynamicSampling(build.samples)) {
        collected.droppedGroups++;
        return;
      }
      if (build.augmented) for (const k of Object.keys(collected.augmented) as (CorrectionBucket | "copy")[]) collected.augmented[k] += build.augmented[k];
      for (const b of build.samples) {
        collected.sequences.push(trainSequence(prompts[p], b));
        collected.samples.push(b);
        collected.promptLengths.push(prompts[p].length);
      }
    });
    collected.keptGroups = await totalOverRanks(setup, collected.sequences.length / method.groupSize + groupsLeftOut, "the kept groups");
  }
  return collected;
}

/** One round of rollouts for `wanted` fresh prompts and the method hook's groups of them (times and samples added to `collected`). */
async function rolloutRound(setup: RlSetup, step: number, round: number, wanted: number, collected: CollectedGroups): Promise<{ prompts: Int32Array[]; builds: GroupBuild[] }> {
  const { config, tokenizer, method } = setup;
  const n = config.rollout.samplesPerPrompt;
  // Every rank advances the cursor alike and takes its share of the prompts (whole groups); a
  // prompt's seeds come from its place in the step's batch, whatever the number of ranks.
  const drawn = setup.cursor.next(wanted).map((example, place) => ({ example, place }));
  const taken = setup.distributed ? setup.distributed.shard(drawn) : drawn;
  const examples = taken.map(({ example }) => setup.examples[example]);
  const prompt = promptOptions(config);
  const prompts = examples.map((e) => encodePrompt(e, tokenizer, prompt));
  const [results, generationSeconds] = await timed(async (): Promise<GenerationResult[][]> => prompts.length === 0 ? [] : setup.policy.generate(
    prompts.map((promptIds, i) => ({ promptIds, n, seed: rolloutSeed(config.run.seed, step, round * 1000 + taken[i].place) })),
    { ...rolloutSampling(config, tokenizer), stopSequences: method.rollout.stopSequences },
    { prefixCache: method.rollout.prefixCache },
  ));
  collected.generationSeconds += generationSeconds;
  collected.generated.push(...results);
  const groups: PromptRollouts[] = examples.map((example, p) => ({
    example,
    promptIds: prompts[p],
    samples: results[p],
    texts: results[p].map((s) => tokenizer.decode(s.tokens, { skipSpecialTokens: true })),
    seed: rolloutSeed(config.run.seed, step, round * 1000 + taken[p].place),
  }));
  const [builds, methodSeconds] = await timed(() => method.buildGroups(groups, step));
  collected.methodSeconds += methodSeconds;
  return { prompts, builds };
}

/** 3. Advantages per group (Octopus: originals and augmented samples form one group). */
function assignStepAdvantages(setup: RlSetup, step: number, groups: CollectedGroups): void {
  if (groups.keptGroups === 0)
    throw new Error(`step ${step}: dynamic sampling dropped every group (all rewards equal in each); raise rollout.promptsPerStep or disable advantage.dynamicSampling`);
  if (groups.sequences.length > 0) assignAdvantages(groups.sequences, groups.samples, groups.promptLengths, setup.method.groupSize, setup.config);
}

/** 4. Old and reference log-probs of the sequences that can train (2 tokens or more), which it returns. The KL term is the method's: β × the per-token KL mask. */
async function oldAndReferenceLogprobs(setup: RlSetup, sequences: TrainSequence[]): Promise<TrainSequence[]> {
  const { config } = setup;
  const usable = sequences.filter((s) => s.tokens.length >= 2);
  const temperature = config.rollout.temperature > 0 ? config.rollout.temperature : 1;
  const lpOptions = { microBatchSize: config.training.microBatchSize, temperature, chunkSize: config.training.logprobChunkSize };
  const old = await PolicyTrainer.logprobs(setup.policy, usable.map((s) => s.tokens), lpOptions);
  usable.forEach((s, i) => (s.oldLogprobs = old[i]));
  if (setup.method.klCoef > 0 && usable.length > 0) {
    if (!setup.reference) throw new Error("a KL term is on but no reference model was loaded");
    const ref = await PolicyTrainer.logprobs(setup.reference, usable.map((s) => s.tokens), lpOptions);
    usable.forEach((s, i) => (s.refLogprobs = ref[i]));
  }
  return usable;
}

/**
 * 5. Updates: the batch split into mini-batches, one optimizer step each. A step whose every
 * group the method left out (SRT's majority-share filter) makes no update.
 */
async function updatePolicy(setup: RlSetup, usable: TrainSequence[]): Promise<StepReport[]> {
  const { config } = setup;
  const loss = { ...config.loss, klCoef: setup.method.klCoef };
  const miniBatches = Math.min(config.training.miniBatches, await totalOverRanks(setup, usable.length, "the trained sequences"));
  const reports: StepReport[] = [];
  for (let m = 0; m < miniBatches; m++) {
    const part = usable.filter((_, i) => i % miniBatches === m);
    reports.push(await setup.trainer.trainStep(part, { objective: "policy", loss, maxLength: config.rollout.maxNewTokens }));
  }
  return reports;
}

/** 6. This rank's metrics of the step (metricsOverRanks makes them the step's). */
function stepMetrics(
  setup: RlSetup,
  step: number,
  groups: CollectedGroups,
  usable: TrainSequence[],
  reports: StepReport[],
  done: { kl: number; end: StepEnd; logprobSeconds: number; trainingSeconds: number; start: bigint },
): StepMetrics {
  const { config } = setup;
  const { rollouts, generated } = groups;
  const { end } = done;
  const last = reports[reports.length - 1];
  const rewards = rollouts.map((r) => r.reward);
  const meanReward = mean(rewards);
  const transitions = zeroBuckets();
  for (const r of rollouts) if (r.transition) transitions[r.transition]++;
  const generatedTokens = generated.flat().reduce((a, s) => a + s.tokens.length, 0);
  return {
    step,
    lr: last?.lr ?? learningRate(setup.trainer.options.schedule, setup.trainer.step),
    loss: mean(reports.map((r) => r.loss)),
    gradNorm: last?.gradNorm ?? 0,
    skipped: reports.some((r) => r.skipped),
    reward: meanReward,
    rewardStd: Math.sqrt(mean(rewards.map((r) => (r - meanReward) ** 2))),
    accuracyO1: mean(rollouts.map((r) => Number(r.firstCorrect))),
    accuracyFinal: mean(rollouts.map((r) => Number(r.finalCorrect))),
    markerRate: mean(rollouts.map((r) => Number(r.hasMarker))),
    transitions,
    augmented: groups.augmented,
    kl: done.kl,
    clipFraction: mean(reports.map((r) => r.clipFraction)),
    entropy: config.loss.entropyCoef > 0 ? mean(reports.map((r) => r.meanEntropy)) : sampledTokenEntropy(generated.flat()),
    responseLength: generatedTokens / Math.max(1, generated.flat().length),
    trainedSequences: usable.length,
    droppedGroups: groups.droppedGroups,
    generatedTokens,
    generationTokensPerSecond: generatedTokens / groups.generationSeconds,
    seconds: { generation: groups.generationSeconds, method: groups.methodSeconds, logprobs: done.logprobSeconds, training: done.trainingSeconds, total: elapsed(done.start) },
    ...(end.metrics ? { methodMetrics: end.metrics } : {}),
    ...(end.stop ? { stopReason: end.stop } : {}),
  };
}

/**
 * Per-token entropy of the rollout distribution, estimated as the mean −log p of the sampled
 * tokens (they were drawn from it; exact in expectation without top-k/top-p filtering). The loss
 * computes the exact entropy only when it trains on it (loss.entropyCoef > 0), and the full
 * softmax over a large vocabulary is not worth a second pass just for a metric.
 */
function sampledTokenEntropy(samples: GenerationResult[]): number {
  let total = 0, count = 0;
  for (const s of samples) for (const lp of s.logprobs) (total -= lp), count++;
  return count === 0 ? 0 : total / count;
}

async function totalOverRanks(setup: RlSetup, value: number, what: string): Promise<number> {
  return setup.distributed ? (await setup.distributed.sum([value], what))[0] : value;
}

/**
 * The step's metrics over all ranks, from each rank's metrics of its `samples` generated samples:
 * means weighted by samples, counts summed, times the slowest rank's. The loss statistics and the
 * optimizer's numbers are already the step's (PolicyTrainer reduces them).
 */
async function metricsOverRanks(dp: DataParallel, local: StepMetrics, samples: number, entropyEstimated: boolean): Promise<StepMetrics> {
  const buckets = Object.keys(local.transitions) as CorrectionBucket[];
  const augmentedKeys = Object.keys(local.augmented) as (CorrectionBucket | "copy")[];
  const weighted = [local.reward, local.rewardStd ** 2 + local.reward ** 2, local.accuracyO1, local.accuracyFinal, local.markerRate].map((m) => m * samples);
  const counts = [samples, local.generatedTokens, local.trainedSequences, local.droppedGroups, ...buckets.map((b) => local.transitions[b]), ...augmentedKeys.map((k) => local.augmented[k])];
  // The sampled-token entropy estimate is per rank, weighted by its tokens (the loss's exact one is already the step's).
  const entropyTerms = entropyEstimated ? [local.entropy * local.generatedTokens, local.generatedTokens] : [local.entropy, 1];
  const totals = await dp.sum([...weighted, ...counts, ...entropyTerms], "the step metrics");
  const entropy = entropyEstimated ? totals[totals.length - 2] / Math.max(1, totals[totals.length - 1]) : local.entropy;
  const slowest = await dp.max([local.seconds.generation, local.seconds.method, local.seconds.logprobs, local.seconds.training, local.seconds.total], "the step times");
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
    entropy,
    responseLength: generatedTokens / n,
    trainedSequences,
    droppedGroups,
    generatedTokens,
    generationTokensPerSecond: generatedTokens / slowest[0],
    seconds: { generation: slowest[0], method: slowest[1], logprobs: slowest[2], training: slowest[3], total: slowest[4] },
  };
}
