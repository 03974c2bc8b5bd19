/**
 * Tiny RL tasks whose outcome no machine's rounding can flip (issue 18's sanity suite): a 1-layer
 * model with the demo's character tokenizer learns something a random init does ~10% of the time,
 * through the real step (lib/rl/step.ts: rollouts, the estimator, the loss, AdamW). `sign: -1`
 * negates every reward; each estimator's advantage is affine in the rewards with a positive scale
 * (GRPO/Dr.GRPO: R − mean (÷ std), RLOO: R − leave-one-out mean, REINFORCE++: R − batch mean), so
 * that is the sign-flipped advantage, and the success rate must fall instead of rise.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { DEMO_VOCAB_SIZE, writeDemoTokenizer } from "../../lib/demo/model";
import { QWEN3_LAYOUT } from "../../lib/engine/model-config";
import { Model } from "../../lib/engine/model";
import { TextTokenizer } from "../../lib/engine/tokenizer";
import { plainSample, type GroupBuild, type MethodHook, type PromptRollouts } from "../../lib/methods/hook";
import { buildOctopusGroup, octopusKlCoef } from "../../lib/methods/octopus/hook";
import { parseConfig, type RunConfig } from "../../lib/rl/config";
import { DataCursor, type Example } from "../../lib/rl/data";
import { createTrainer } from "../../lib/rl/run";
import { runSft } from "../../lib/rl/sft";
import { rlStep } from "../../lib/rl/step";
import type { ModelSpec } from "../../lib/native";

export const SANITY_SPEC: ModelSpec = {
  ...QWEN3_LAYOUT,
  vocabSize: DEMO_VOCAB_SIZE,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tieWordEmbeddings: true,
};

let tokenizerDir: string | undefined;
/** The demo's character tokenizer (103 tokens, 10 of them digits: a random policy picks one ~10% of the time). */
export function sanityTokenizer(): TextTokenizer {
  if (!tokenizerDir) {
    tokenizerDir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-sanity-tokenizer-"));
    writeDemoTokenizer(tokenizerDir);
  }
  return TextTokenizer.fromDir(tokenizerDir);
}

const PROMPTS: Example[] = "abcdefgh".split("").map((c, i) => ({ id: String(i), problem: c, answer: "" }));

/** The recipe of one estimator: settings over the sanity base (8 prompts × 8 samples, lr 3e-2, 3 new tokens). */
export function sanityConfig(settings: Record<string, unknown>): RunConfig {
  const base = {
    run: { seed: 0 },
    data: { promptTemplate: "{problem}=", chat: false },
    rollout: { promptsPerStep: 8, samplesPerPrompt: 8, maxNewTokens: 3, temperature: 1 },
    optimizer: { lr: 3e-2, warmupSteps: 0, weightDecay: 0, maxGradNorm: 1 },
    training: { microBatchSize: 64 },
  };
  const merged = structuredClone(base) as Record<string, Record<string, unknown>>;
  for (const [section, values] of Object.entries(settings)) merged[section] = { ...(merged[section] ?? {}), ...(values as object) };
  return parseConfig(merged, "sanity recipe");
}

export interface SanityRun {
  /** per step: the fraction of generated samples that succeeded (before that step's update) */
  success: number[];
}

/** The task's verdict on one generated response (its tokens, EOS excluded). */
export type SuccessTest = (text: string) => boolean;

/** The last character is a digit: what the GRPO-family tasks reward. */
export const endsWithDigit: SuccessTest = (text) => /[0-9]$/.test(text);

/**
 * Trains `steps` RL steps of `config` from a fresh model of `seed` on the 8 prompts, rewarding
 * `success` (× `sign`), and returns the success rate per step.
 */
export async function trainPlain(config: RunConfig, steps: number, options: { sign: 1 | -1; seed: number; success?: SuccessTest }): Promise<SanityRun> {
  const success = options.success ?? endsWithDigit;
  const tokenizer = sanityTokenizer();
  const policy = await Model.create(SANITY_SPEC, options.seed, { device: "cpu" });
  const perStep: number[] = [];
  let hits = 0, seen = 0;
  const endStep = () => {
    perStep.push(hits / seen);
    hits = seen = 0;
  };
  const method: MethodHook = {
    groupSize: config.rollout.samplesPerPrompt,
    klCoef: 0,
    rollout: {},
    buildGroups: async (groups: PromptRollouts[]): Promise<GroupBuild[]> =>
      groups.map((g) => {
        const ok = g.texts.map((t) => success(t));
        hits += ok.filter(Boolean).length;
        seen += ok.length;
        const rollouts = ok.map((c) => ({ firstCorrect: c, finalCorrect: c, hasMarker: false, reward: c ? 1 : 0 }));
        return { samples: g.samples.map((s, i) => plainSample(s.tokens, options.sign * rollouts[i].reward)), rollouts, train: true };
      }),
    finishStep: async () => {
      endStep();
      return {};
    },
    dispose: () => {},
  };
  try {
    await loop(config, policy, tokenizer, method, steps, endStep);
  } finally {
    policy.dispose();
  }
  return { success: perStep };
}

/**
 * The steps. DAPO's dynamic sampling ends a run whose every group has equal rewards (all right or
 * all wrong: nothing is left to learn); `onSaturated` records that last step's success.
 */
async function loop(config: RunConfig, policy: Model, tokenizer: TextTokenizer, method: MethodHook, steps: number, onSaturated: () => void, reference?: Model): Promise<void> {
  const trainer = createTrainer(config, policy);
  const cursor = DataCursor.start(PROMPTS.length, config.run.seed);
  for (let step = 1; step <= steps; step++) {
    try {
      await rlStep({ config, policy, reference, tokenizer, trainer, examples: PROMPTS, cursor, method }, step);
    } catch (error) {
      if (!/dynamic sampling dropped every group/.test((error as Error).message)) throw error;
      onSaturated();
      return;
    }
  }
}

/**
 * Octopus Stage I on a task where o2 can fix o1: a model taught the format `s\boxed{d}<sep>s\boxed{d}`
 * with both digits spread evenly (a short SFT) must learn to make its correction o2 the digit 7,
 * whatever o1 was.
 * o1 is right 10% of the time and stays so (Stage I leaves it fixed: no loss on it); the final
 * answer (o2) starts near 10% and must rise. Success is the final answer's correctness.
 */
export async function trainOctopusStageOne(config: RunConfig, steps: number, options: { sign: 1 | -1; seed: number }): Promise<SanityRun & { firstAttempt: number[] }> {
  const tokenizer = sanityTokenizer();
  const separator = config.method.octopus.separator;
  const policy = await Model.create(SANITY_SPEC, options.seed, { device: "cpu" });
  // Both attempts well formed (reasoning, then one box), so the reward is the correctness part of r_sc.
  // o2 opens with another letter than o1: two right attempts are then not the same text, which
  // r_sc would cap at 0.5 as a copy.
  const attempt = (reasoning: string, i: number) => `${reasoning}\\boxed{${(i * 7 + 3) % 10}}`;
  const sftItems = Array.from({ length: 400 }, (_, i) => ({ example: PROMPTS[i % PROMPTS.length], o1: attempt("s", i), o2: attempt("t", Math.floor(i / 10) + 3 * i) }));
  await runSft(policy, tokenizer, sftItems, { prompt: { template: "{problem}=", chat: false }, separator, steps: 80, batchSize: 32, lr: 1e-2, maxResponseTokens: 12, seed: 1 });
  const isSeven = (part: string) => part.trim().endsWith("\\boxed{7}");
  // Stage I's KL on o1 is to the model Octopus starts from: the SFT model.
  const sftDir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-sanity-sft-"));
  await policy.save(sftDir, { overwrite: true });
  const reference = await Model.load(sftDir, { device: "cpu" });
  const perStep: number[] = [], firstPerStep: number[] = [];
  let finals = 0, firsts = 0, seen = 0;
  const method: MethodHook = {
    groupSize: 2 * config.rollout.samplesPerPrompt,
    klCoef: octopusKlCoef(config),
    rollout: {},
    buildGroups: async (groups) =>
      groups.map((g) => {
        const build = buildOctopusGroup(config, tokenizer, g, isSeven);
        finals += build.rollouts.filter((r) => r.finalCorrect).length;
        firsts += build.rollouts.filter((r) => r.firstCorrect).length;
        seen += build.rollouts.length;
        if (options.sign === -1) for (const s of build.samples) s.returns = s.returns.map((r) => -r);
        return build;
      }),
    finishStep: async () => {
      perStep.push(finals / seen);
      firstPerStep.push(firsts / seen);
      finals = firsts = seen = 0;
      return {};
    },
    dispose: () => {},
  };
  try {
    await loop(config, policy, tokenizer, method, steps, () => {}, reference);
  } finally {
    policy.dispose();
    reference.dispose();
    fs.rmSync(sftDir, { recursive: true, force: true });
  }
  return { success: perStep, firstAttempt: firstPerStep };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** Mean of the first / last `k` entries. */
export const head = (xs: number[], k: number) => mean(xs.slice(0, k));
export const tail = (xs: number[], k: number) => mean(xs.slice(-k));

/** The first step (1-based) that ends a `window`-step stretch whose mean success is ≥ `level`; undefined when none does. */
export function stepReaching(xs: number[], level: number, window: number): number | undefined {
  for (let end = window; end <= xs.length; end++) if (mean(xs.slice(end - window, end)) >= level) return end;
  // A run that ended early (DAPO: every group saturated) reached it if its last steps did.
  return xs.length < window && xs.length > 0 && mean(xs) >= level ? xs.length : undefined;
}
