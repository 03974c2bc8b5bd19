/**
 * Evaluation with self-correction metrics (SPEC §8): greedy (or sampled) answers to a set
 * of problems, first attempt o1 and final answer (o2 when the response corrects itself).
 *
 *   Acc@t1  fraction whose o1 is correct
 *   Acc@t2  fraction whose final answer is correct
 *   Δ       Acc@t2 − Acc@t1 = Δ_i→c − Δ_c→i
 *   Δ_i→c   fraction wrong at t1 and right at t2;  Δ_c→i: right at t1, wrong at t2
 */
import type { Example } from "./data";
import { isEquivalent } from "./grading/verify";
import { extractAnswer } from "./grading/extract";
import { parseCorrectionResponse } from "./methods/octopus";
import type { Model } from "./model";
import { encodePrompt, type PromptOptions } from "./prompts";
import type { TextTokenizer } from "./tokenizer";

export interface SelfCorrectionMetrics {
  count: number;
  accT1: number;
  accT2: number;
  delta: number;
  deltaIncorrectToCorrect: number;
  deltaCorrectToIncorrect: number;
  /** fraction of responses that emit the correction marker */
  markerRate: number;
}

export interface EvaluatedItem {
  id: string;
  answer: string;
  text: string;
  o1Answer?: string;
  finalAnswer?: string;
  o1Correct: boolean;
  finalCorrect: boolean;
  hasMarker: boolean;
}

/** Judges one response against its gold answer: o1, and the final answer (o2 with a marker). */
export function judgeResponse(text: string, gold: string, separator: string): Omit<EvaluatedItem, "id" | "answer" | "text"> {
  const parsed = parseCorrectionResponse(text, separator);
  const o1Answer = extractAnswer(parsed.o1);
  const o1Correct = o1Answer !== undefined && isEquivalent(gold, o1Answer);
  if (!parsed.hasMarker) return { o1Answer, finalAnswer: o1Answer, o1Correct, finalCorrect: o1Correct, hasMarker: false };
  const finalAnswer = parsed.o2HasBox ? extractAnswer(parsed.o2 ?? "") : undefined;
  const finalCorrect = finalAnswer !== undefined && isEquivalent(gold, finalAnswer);
  return { o1Answer, finalAnswer, o1Correct, finalCorrect, hasMarker: true };
}

/** The counts behind the metrics: what data-parallel evaluation sums over the ranks. */
export interface SelfCorrectionCounts {
  count: number;
  o1Correct: number;
  finalCorrect: number;
  incorrectToCorrect: number;
  correctToIncorrect: number;
  withMarker: number;
}

export function selfCorrectionCounts(items: Pick<EvaluatedItem, "o1Correct" | "finalCorrect" | "hasMarker">[]): SelfCorrectionCounts {
  const count = (predicate: (i: (typeof items)[number]) => boolean) => items.filter(predicate).length;
  return {
    count: items.length,
    o1Correct: count((i) => i.o1Correct),
    finalCorrect: count((i) => i.finalCorrect),
    incorrectToCorrect: count((i) => !i.o1Correct && i.finalCorrect),
    correctToIncorrect: count((i) => i.o1Correct && !i.finalCorrect),
    withMarker: count((i) => i.hasMarker),
  };
}

export function metricsFromCounts(c: SelfCorrectionCounts): SelfCorrectionMetrics {
  const n = Math.max(c.count, 1);
  const accT1 = c.o1Correct / n, accT2 = c.finalCorrect / n;
  return {
    count: c.count,
    accT1,
    accT2,
    delta: accT2 - accT1,
    deltaIncorrectToCorrect: c.incorrectToCorrect / n,
    deltaCorrectToIncorrect: c.correctToIncorrect / n,
    markerRate: c.withMarker / n,
  };
}

export function selfCorrectionMetrics(items: Pick<EvaluatedItem, "o1Correct" | "finalCorrect" | "hasMarker">[]): SelfCorrectionMetrics {
  return metricsFromCounts(selfCorrectionCounts(items));
}

export interface EvaluateOptions {
  prompt: PromptOptions;
  separator: string;
  maxNewTokens: number;
  /** 0 = greedy */
  temperature?: number;
  /** samples per problem (metrics average over all of them; > 1 needs temperature > 0) */
  samplesPerProblem?: number;
  seed?: number;
  /** prompts per generate call */
  batch?: number;
}

export async function evaluateSelfCorrection(
  model: Model,
  tokenizer: TextTokenizer,
  examples: Example[],
  options: EvaluateOptions,
): Promise<{ metrics: SelfCorrectionMetrics; items: EvaluatedItem[] }> {
  const items: EvaluatedItem[] = [];
  const batch = options.batch ?? 64;
  const samples = options.samplesPerProblem ?? 1;
  for (let start = 0; start < examples.length; start += batch) {
    const chunk = examples.slice(start, start + batch);
    const results = await model.generate(
      chunk.map((e, i) => ({ promptIds: encodePrompt(e, tokenizer, options.prompt), n: samples, seed: (options.seed ?? 0) + start + i })),
      { temperature: options.temperature ?? 0, maxNewTokens: options.maxNewTokens, eosTokenIds: tokenizer.eosTokenIds },
    );
    chunk.forEach((example, i) => {
      for (const sample of results[i]) {
        const text = tokenizer.decode(sample.tokens, { skipSpecialTokens: true });
        items.push({ id: example.id, answer: example.answer, text, ...judgeResponse(text, example.answer, options.separator) });
      }
    });
  }
  return { metrics: selfCorrectionMetrics(items), items };
}
