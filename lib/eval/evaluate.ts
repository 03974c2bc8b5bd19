/**
 * Evaluation of a model on problems with verifiable answers (docs/methods.md §8): n samples per problem,
 * R rounds of each, every round graded by the verifier (docs/methods.md §7), in one of two self-correction
 * modes:
 *
 *   octopus   single pass (docs/methods.md §6.1). Round 1 is the first attempt o1, round 2 the re-solve o2
 *             after the marker, or o1 again when the model did not correct itself (o1 is then
 *             its final answer). Each further round appends the marker to the response again and
 *             continues generation from the cached prefix (test-time scaling).
 *   two-turn  SCoRe prompting (docs/methods.md §6.2). Turn r+1 sees the prompt, the earlier turns and after
 *             each an instruction that there might be an error, asking to rewrite the solution.
 *
 * The CLI (`octo-native eval`), evaluation inside training and the demo all call evaluateModel,
 * so the same settings give the same numbers everywhere.
 */
import { z } from "zod";

import type { Model } from "../engine/model";
import type { GenerationResult, PrefixCache, SamplingParams } from "../engine/sampling";
import type { TextTokenizer } from "../engine/tokenizer";
import { extractAnswer } from "../grading/extract";
import { isEquivalent } from "../grading/verify";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import type { Example } from "../rl/data";
import { DEFAULT_CORRECTION_INSTRUCTION, encodePrompt, promptMessages } from "../rl/prompts";
import { seededRandom } from "../util/random";
import { defaultKs, evaluationMetrics, type EvalMetrics, type GradedAnswer } from "./metrics";

export type CorrectionMode = "octopus" | "two-turn";

const positiveInt = z.number().int().positive();

export const evalSettingsSchema = z.strictObject({
  /** how rounds after the first come about (see the top of this file) */
  mode: z.enum(["octopus", "two-turn"]).default("octopus"),
  /** samples per problem (n); more than 1 needs temperature > 0 */
  samplesPerProblem: positiveInt.default(1),
  /** rounds per sample (t1 … tR), at least 2 */
  rounds: z.number().int().min(2).default(2),
  /** k of pass@k, maj@k, mean@k (default: powers of two up to n, and n) */
  ks: z.array(positiveInt).min(1).optional(),
  /** 0 = greedy */
  temperature: z.number().min(0).default(0),
  topP: z.number().gt(0).max(1).default(1),
  /** new tokens per generation call (a round that is generated separately gets its own budget) */
  maxNewTokens: positiveInt.default(1024),
  /** problem i draws from seed + i (its samples from independent streams of that seed) */
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(0),
  /** problems per generate call (memory only: results do not depend on it) */
  batch: positiveInt.default(32),
  prompt: z.strictObject({
    template: z.string(),
    chat: z.boolean(),
    chatTemplateVariables: z.record(z.string(), z.unknown()).optional(),
  }),
  /** the Octopus self-correction marker */
  separator: z.string().min(1).default(DEFAULT_SEPARATOR),
  /** the two-turn instruction */
  instruction: z.string().min(1).default(DEFAULT_CORRECTION_INSTRUCTION),
});

export type EvalSettingsInput = z.input<typeof evalSettingsSchema>;
export type EvalSettings = z.output<typeof evalSettingsSchema> & { ks: number[] };

export function resolveEvalSettings(input: EvalSettingsInput): EvalSettings {
  const parsed = evalSettingsSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new RangeError(`evaluation setting '${issue.path.join(".")}': ${issue.message}`);
  }
  const settings = parsed.data;
  const n = settings.samplesPerProblem;
  if (n > 1 && settings.temperature === 0)
    throw new RangeError(`${n} samples per problem at temperature 0 (greedy) would be ${n} identical samples; set a temperature > 0`);
  const ks = settings.ks ?? defaultKs(n);
  const bad = ks.find((k) => k > n);
  if (bad !== undefined) throw new RangeError(`k = ${bad} is more than the ${n} samples per problem; raise the samples (n) or lower k`);
  return { ...settings, ks: [...new Set(ks)].sort((a, b) => a - b) };
}

/** One round of one sample: a line of the per-item JSONL. */
export interface EvalSample {
  problemId: string;
  problemIndex: number;
  sample: number;
  /** 1-based */
  round: number;
  /** the attempt of this round (octopus: the segment between markers; two-turn: the turn) */
  text: string;
  /** the extracted final answer, null when none */
  answer: string | null;
  correct: boolean;
  gold: string;
  /** octopus round 2 without a marker: the model kept its first answer */
  carried?: boolean;
}

export interface EvalResult {
  settings: EvalSettings;
  metrics: EvalMetrics;
  samples: EvalSample[];
}

export interface EvaluateHooks {
  /** after each batch of problems */
  onProgress?: (doneProblems: number, totalProblems: number) => void;
}

interface Attempt {
  text: string;
  carried: boolean;
}

/** One sample of one problem as its rounds are generated. */
interface Rollout {
  problem: number;
  sample: number;
  /** generated tokens so far without EOS; octopus: markers appended between rounds included */
  responseIds: number[];
  /** two-turn without chat: prompt, turns and instructions so far */
  contextIds: number[];
  attempts: Attempt[];
  hasMarker: boolean;
}

/** The seed of a separately generated round of one sample: reproducible, and distinct across samples and rounds. */
function continuationSeed(seed: number, problemIndex: number, sample: number, round: number): number {
  let h = seed >>> 0;
  for (const part of [problemIndex, sample, round]) h = Math.floor(seededRandom((h ^ Math.imul(part + 1, 0x9e3779b1)) >>> 0)() * 2 ** 31);
  return h;
}

function withoutEos(result: GenerationResult): number[] {
  const ids = Array.from(result.tokens);
  return result.finishReason === "eos" ? ids.slice(0, -1) : ids;
}

interface ChunkContext {
  model: Model;
  tokenizer: TextTokenizer;
  examples: Example[];
  /** index of examples[0] in the whole set */
  firstIndex: number;
  prompts: Int32Array[];
  settings: EvalSettings;
  params: Partial<SamplingParams>;
  cache?: PrefixCache;
}

async function firstRound(c: ChunkContext): Promise<Rollout[]> {
  const n = c.settings.samplesPerProblem;
  const results = await c.model.generate(
    c.prompts.map((promptIds, i) => ({ promptIds, n, seed: c.settings.seed + c.firstIndex + i })),
    c.params,
    { prefixCache: c.cache },
  );
  return results.flatMap((samples, problem) =>
    samples.map((s, sample) => {
      const responseIds = withoutEos(s);
      const text = c.tokenizer.decode(responseIds, { skipSpecialTokens: true });
      return {
        problem, sample, responseIds, contextIds: [...c.prompts[problem], ...responseIds],
        attempts: [{ text, carried: false }], hasMarker: text.includes(c.settings.separator),
      };
    }),
  );
}

/** Generates one more round for each of `rollouts` from its prompt ids; returns the new tokens (without EOS). */
async function nextRound(c: ChunkContext, rollouts: Rollout[], round: number, promptIds: (r: Rollout) => number[] | Int32Array): Promise<number[][]> {
  const requests = rollouts.map((r) => ({
    promptIds: Int32Array.from(promptIds(r)),
    n: 1,
    seed: continuationSeed(c.settings.seed, c.firstIndex + r.problem, r.sample, round),
  }));
  const results = await c.model.generate(requests, c.params, { prefixCache: c.cache });
  return results.map(([result]) => withoutEos(result));
}

async function octopusRounds(c: ChunkContext): Promise<Rollout[]> {
  const { separator, rounds } = c.settings;
  const rollouts = await firstRound(c);
  for (const r of rollouts) {
    r.attempts = r.attempts[0].text.split(separator).map((text) => ({ text, carried: false }));
    // No marker: the model chose not to correct itself, so its final answer is still o1.
    if (r.attempts.length === 1) r.attempts.push({ text: r.attempts[0].text, carried: true });
  }
  const separatorIds = Array.from(c.tokenizer.encode(separator, { addSpecialTokens: false }));
  for (let round = 3; round <= rounds; round++) {
    const pending = rollouts.filter((r) => r.attempts.length < round);
    if (pending.length === 0) continue;
    const continuations = await nextRound(c, pending, round, (r) => [...c.prompts[r.problem], ...r.responseIds, ...separatorIds]);
    pending.forEach((r, i) => {
      r.responseIds = [...r.responseIds, ...separatorIds, ...continuations[i]];
      const text = c.tokenizer.decode(continuations[i], { skipSpecialTokens: true });
      r.attempts.push(...text.split(separator).map((t) => ({ text: t, carried: false })));
    });
  }
  return rollouts;
}

async function twoTurnRounds(c: ChunkContext): Promise<Rollout[]> {
  const { prompt, instruction } = c.settings;
  const rollouts = await firstRound(c);
  const instructionIds = Array.from(c.tokenizer.encode(`\n\n${instruction}\n\n`, { addSpecialTokens: false }));
  const conversation = (r: Rollout) =>
    c.tokenizer.encodeChat(
      [
        ...promptMessages(c.examples[r.problem], prompt.template),
        ...r.attempts.flatMap((a) => [{ role: "assistant", content: a.text }, { role: "user", content: instruction }]),
      ],
      { addGenerationPrompt: true, extra: prompt.chatTemplateVariables },
    );
  for (let round = 2; round <= c.settings.rounds; round++) {
    const turns = await nextRound(c, rollouts, round, (r) => (prompt.chat ? conversation(r) : [...r.contextIds, ...instructionIds]));
    rollouts.forEach((r, i) => {
      r.contextIds = [...r.contextIds, ...instructionIds, ...turns[i]];
      r.attempts.push({ text: c.tokenizer.decode(turns[i], { skipSpecialTokens: true }), carried: false });
    });
  }
  return rollouts;
}

/**
 * Samples, grades and scores `examples`. Deterministic for fixed settings on one device: problem
 * i samples from seed + i whatever the batch, and later rounds from seeds of (problem, sample, round).
 */
export async function evaluateModel(
  model: Model,
  tokenizer: TextTokenizer,
  examples: Example[],
  input: EvalSettingsInput,
  hooks: EvaluateHooks = {},
): Promise<EvalResult> {
  const settings = resolveEvalSettings(input);
  if (examples.length === 0) throw new RangeError("nothing to evaluate: the evaluation set is empty");
  const params = { temperature: settings.temperature, topP: settings.topP, maxNewTokens: settings.maxNewTokens, eosTokenIds: tokenizer.eosTokenIds };
  const graded: GradedAnswer[][][] = [];
  const hasMarker: boolean[][] = [];
  const samples: EvalSample[] = [];
  // Later rounds continue from the cached keys/values of the round before; a plain octopus
  // evaluation (2 rounds, both from one pass) needs no cache and keeps none in memory.
  const continues = settings.mode === "two-turn" || settings.rounds > 2;
  const cache = continues ? model.createPrefixCache() : undefined;
  try {
    for (let start = 0; start < examples.length; start += settings.batch) {
      const chunk = examples.slice(start, start + settings.batch);
      const prompts = chunk.map((e) => encodePrompt(e, tokenizer, settings.prompt));
      const context: ChunkContext = { model, tokenizer, examples: chunk, firstIndex: start, prompts, settings, params, cache };
      const rollouts = settings.mode === "octopus" ? await octopusRounds(context) : await twoTurnRounds(context);
      for (const [p, example] of chunk.entries()) {
        graded.push([]);
        hasMarker.push([]);
        for (const r of rollouts.filter((x) => x.problem === p)) {
          const rounds: GradedAnswer[] = [];
          for (const [i, attempt] of r.attempts.slice(0, settings.rounds).entries()) {
            const answer = attempt.carried ? rounds[i - 1].answer : extractAnswer(attempt.text);
            const correct = attempt.carried ? rounds[i - 1].correct : answer !== undefined && isEquivalent(example.answer, answer);
            rounds.push({ answer, correct });
            samples.push({
              problemId: example.id, problemIndex: start + p, sample: r.sample, round: i + 1, text: attempt.text,
              answer: answer ?? null, correct, gold: example.answer, ...(attempt.carried ? { carried: true } : {}),
            });
          }
          graded[start + p].push(rounds);
          hasMarker[start + p].push(r.hasMarker);
        }
      }
      cache?.clear();
      hooks.onProgress?.(start + chunk.length, examples.length);
    }
  } finally {
    cache?.clear();
  }
  return { settings, metrics: evaluationMetrics(graded, hasMarker, settings.ks), samples };
}
