/**
 * Answer verification (docs/methods.md §7): is a predicted final answer equivalent to the gold one?
 *
 * 1. Each side's answer: a response's final answer (extract.ts, in its order of precedence), or the
 *    text itself when it is a bare answer.
 * 2. The same text, or the same string form after normalisation (normalize.ts): equal.
 * 3. Two plain numbers (kinds/number.ts): equal exactly, or within 1e-6 when one is a decimal; a
 *    decimal comma (`3,75`) is read against a decimal with a point. Two text answers: equal as words.
 * 4. Else both are read by kind (answer-kinds.ts: matrix, set / tuple / interval / list, relation,
 *    assignment, ratio, expression) and compared kind by kind; the scalar leaves that stages 2-3 do
 *    not settle go to the CAS in one batch (cas.ts), two numbers being redone in exact arithmetic.
 *
 * Time bound: `timeoutMs` (default 2000 ms) is the budget of the whole call: answer extraction,
 * normalisation, the CAS and the exact arithmetic (budget.ts). Past it the answer is judged
 * incorrect, with `timedOut` and an `error` that names the stage. Extraction is linear in the text
 * and is checked against the budget when it ends; the CAS worker is cut off at the budget; exact
 * arithmetic checks it at every node, and numbers.ts caps its numbers at MAX_EXACT_BITS. Answers
 * longer than MAX_ANSWER_CHARS are only compared verbatim, and answers nested deeper than
 * MAX_NESTING_DEPTH only as normalised strings, which keeps the reading and comparison stages (at
 * worst quadratic in that length) well under a millisecond. So one call takes at most ≈ timeoutMs
 * plus what extraction of a huge text takes beyond it (~0.1 s per MB here), plus, on the first call
 * or after a restart, the CAS worker's start-up, which is not counted.
 *
 * Nothing here throws on weird input: failures come back as `correct: false` with `error`.
 */
import { type Answer, describeKind, formatAnswer, type GradeMethod, leafCount, type ScalarOracle, type Verdict } from "./answer";
import { compareAnswers, readAnswer } from "./answer-kinds";
import { Budget, OverBudget } from "./budget";
import { casCompare, type ScalarRelation } from "./cas";
import { type AnswerSource, extractFinalAnswer, hasBoxCommand } from "./extract";
import { casDecision, cheapScalarDecision, type ScalarDecision } from "./kinds/expression";
import { nestingDepth } from "./latex";
import { cleanLatex, isTextAnswer, normalizeAnswer } from "./normalize";
import { numbersEqual } from "./numbers";
import { decimalCommaNumber, hasDecimalPoint, readNumber } from "./kinds/number";

export { closeVerifier } from "./cas";
export type { GradeMethod } from "./answer";

/** How one side was read, for `grade --explain`. */
export interface SideReading {
  /** the answer compared: a response's final answer, or the text itself */
  answer: string;
  /** where the answer was found: extract.ts's source, or "whole text" for a bare answer */
  from: AnswerSource | "whole text";
  /** the kind it was read as: "a number", "an interval", "an equation", … */
  kind: string;
  /** the normalised form compared */
  read: string;
}

export interface Explanation {
  gold: SideReading;
  pred: SideReading;
  /** why the two are equal or not */
  why: string;
}

export interface GradeResult {
  correct: boolean;
  /** the stage that proved equality; "none" when no stage did */
  method: GradeMethod;
  /** why the answers could not be compared fully (parse failure, budget exceeded, …) */
  error?: string;
  /** the call ran past its budget (`error` says in which stage); the answer is judged incorrect */
  timedOut?: true;
  /** with `explain`: how both sides were read and why they are equal or not */
  explain?: Explanation;
}

export interface VerifyOptions {
  /** wall-clock budget of one whole call (answer extraction, normalisation, CAS, exact arithmetic), in ms (default DEFAULT_TIMEOUT_MS) */
  timeoutMs?: number;
  /** add `explain` to the result (costs a second reading of both answers) */
  explain?: boolean;
}

export const DEFAULT_TIMEOUT_MS = 2000;
/** answers longer than this (after extraction) are only compared verbatim: it bounds every later stage */
export const MAX_ANSWER_CHARS = 1000;
/** answers nested deeper than this (brackets and braces) only get the string comparison */
export const MAX_NESTING_DEPTH = 32;
/** the most scalar leaf pairs one call may compare (two 50-element sets), and send to the CAS */
const MAX_LEAF_PAIRS = 2500;
const MAX_CAS_PAIRS = 400;

/** Grade a predicted answer (a bare answer, or a response whose final answer is taken) against the gold one. */
export function gradeAnswer(gold: string, pred: string, options: VerifyOptions = {}): GradeResult {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) return { correct: false, method: "none", error: `timeoutMs must be a positive number of milliseconds, got ${timeoutMs}` };
  try {
    return gradeUnsafe(gold, pred, new Budget(timeoutMs), options.explain === true);
  } catch (e) {
    if (e instanceof OverBudget) return { correct: false, method: "none", error: e.message, timedOut: true };
    return { correct: false, method: "none", error: `verifier error: ${(e as Error)?.message ?? String(e)}` };
  }
}

/** True when `pred` is equivalent to `gold` (see gradeAnswer). */
export function isEquivalent(gold: string, pred: string, options: VerifyOptions = {}): boolean {
  return gradeAnswer(gold, pred, options).correct;
}

/** Words of two or more letters, outside LaTeX commands. */
function wordCount(text: string): number {
  return text.replace(/\\[a-zA-Z]+/g, " ").match(/[a-zA-Z]{2,}/g)?.length ?? 0;
}

/**
 * The answer a text gives: a box's content, else (in prose) the final answer phrase, final math or
 * last number; a bare answer (`x = 4+4+3 = 11`, `-2 \text{ and } 1`) is the whole text.
 */
function answerOf(text: string): { answer: string; from: SideReading["from"] } {
  const found = extractFinalAnswer(text);
  // a phrase or math around two words ("the answer is \\( 9 \\)"), a last number in a sentence of four
  if (found !== undefined && (found.from === "box" || wordCount(text) >= (found.from === "last number" ? 4 : 2))) return found;
  if (found === undefined && hasBoxCommand(text)) return { answer: "", from: "box" }; // an empty or broken box: no answer
  return { answer: text.trim(), from: "whole text" };
}

/** Two plain numbers, or text answers: decided without reading kinds (decimal comma included, see kinds/number.ts). */
function wholeAnswerDecision(g: string, p: string): ScalarDecision | undefined {
  const cheap = cheapScalarDecision(g, p, "equal");
  if (cheap?.method === "numeric" || (cheap && isTextAnswer(g) && isTextAnswer(p))) return cheap;
  const [point, comma] = hasDecimalPoint(g) ? [g, p] : hasDecimalPoint(p) ? [p, g] : [undefined, undefined];
  const decimal = point !== undefined && readNumber(point);
  const european = comma !== undefined && decimalCommaNumber(comma);
  if (decimal && european) {
    const eq = numbersEqual(decimal, european);
    return { eq, method: "numeric", why: `${comma} read with a decimal comma against the decimal ${point}: ${eq ? "equal" : "different"}` };
  }
  return undefined;
}

function gradeUnsafe(goldInput: string, predInput: string, budget: Budget, explain: boolean): GradeResult {
  if (typeof goldInput !== "string" || typeof predInput !== "string") {
    return { correct: false, method: "none", error: `gold and pred must be strings (got ${typeof goldInput} and ${typeof predInput})` };
  }
  const goldSide = answerOf(goldInput);
  const predSide = answerOf(predInput);
  const gold = goldSide.answer;
  const pred = predSide.answer;
  budget.check("extracting the answers");
  let readings: [Answer, Answer] | undefined;
  const result = (correct: boolean, method: GradeMethod, why: string, error?: string): GradeResult => {
    const graded: GradeResult = { correct, method: correct ? method : "none", ...(error === undefined ? {} : { error }) };
    if (!explain) return graded;
    const side = (input: typeof goldSide, read: Answer | undefined): SideReading => {
      const answer = read ?? readAnswer(cleanLatex(input.answer));
      return { answer: input.answer, from: input.from, kind: describeKind(answer), read: formatAnswer(answer) };
    };
    return { ...graded, explain: { gold: side(goldSide, readings?.[0]), pred: side(predSide, readings?.[1]), why } };
  };

  if (gold !== "" && gold === pred) return result(true, "string", "the same text");
  for (const [name, s] of [["gold", gold], ["pred", pred]] as const) {
    if (s.length > MAX_ANSWER_CHARS) {
      const error = `${name} answer is too long to compare (${s.length} > ${MAX_ANSWER_CHARS} chars)`;
      return explain ? { correct: false, method: "none", error, explain: tooLong(goldSide, predSide, error) } : { correct: false, method: "none", error };
    }
  }
  const g = cleanLatex(gold);
  const p = cleanLatex(pred);
  if (g === "" || p === "") {
    const error = g === "" ? "empty gold answer" : "empty prediction";
    return result(false, "none", error, error);
  }
  if (normalizeAnswer(g) === normalizeAnswer(p)) return result(true, "string", `the same after normalisation: ${normalizeAnswer(g)}`);
  for (const [name, s] of [["gold", g], ["pred", p]] as const) {
    if (nestingDepth(s) > MAX_NESTING_DEPTH) {
      const error = `${name} answer is nested too deeply to compare beyond strings (> ${MAX_NESTING_DEPTH} levels)`;
      return explain ? { correct: false, method: "none", error, explain: tooLong(goldSide, predSide, error) } : { correct: false, method: "none", error };
    }
  }

  const whole = wholeAnswerDecision(g, p);
  if (whole) return result(whole.eq, whole.method, whole.why);

  readings = [readAnswer(g), readAnswer(p)];
  const [ga, pa] = readings;
  const leafPairs = leafCount(ga) * leafCount(pa);
  if (leafPairs > MAX_LEAF_PAIRS) {
    const error = `too many elements to compare (${leafPairs} pairs > ${MAX_LEAF_PAIRS})`;
    return result(false, "none", error, error);
  }

  // First pass: every scalar pair the comparison asks is decided cheaply or recorded for the CAS.
  const decided = new Map<string, ScalarDecision>();
  const pending = new Map<string, [string, string, ScalarRelation]>();
  const key = (a: string, b: string, relation: ScalarRelation) => `${relation}\u0000${a}\u0000${b}`;
  const recordingOracle: ScalarOracle = (a, b, relation) => {
    const k = key(a, b, relation);
    if (!decided.has(k) && !pending.has(k)) {
      const cheap = cheapScalarDecision(a, b, relation);
      if (cheap) decided.set(k, cheap);
      else pending.set(k, [a, b, relation]);
    }
    const d = decided.get(k);
    return { equal: d?.eq ?? false, why: d?.why ?? "" };
  };
  compareAnswers(ga, pa, recordingOracle);
  budget.check("normalising the answers");

  let casError: string | undefined;
  if (pending.size > 0) {
    const pairs = [...pending.values()];
    if (pairs.length > MAX_CAS_PAIRS) {
      const error = `too many elements to compare (${pairs.length} pairs > ${MAX_CAS_PAIRS})`;
      return result(false, "none", error, error);
    }
    const { verdicts, error } = casCompare(pairs, budget);
    casError = error;
    pairs.forEach(([a, b, relation], i) => decided.set(key(a, b, relation), casDecision(a, b, relation, verdicts?.[i], budget)));
  }

  // Second pass: the same comparison with every pair decided; the strongest stage used names the method.
  let method: GradeMethod = "none";
  const errors = new Set<string>();
  const finalOracle: ScalarOracle = (a, b, relation) => {
    const d = decided.get(key(a, b, relation));
    if (!d) return { equal: false, why: `${a} and ${b} were not compared` };
    if (d.error) errors.add(d.error);
    if (d.eq && METHOD_RANK[d.method] > METHOD_RANK[method]) method = d.method;
    return { equal: d.eq, why: d.why };
  };
  const verdict: Verdict = compareAnswers(ga, pa, finalOracle);
  if (verdict.equal) return result(true, method === "none" ? "string" : method, verdict.why);
  const error = casError ?? [...errors][0];
  return result(false, "none", verdict.why, error);
}

const METHOD_RANK: Record<GradeMethod, number> = { none: 0, string: 1, numeric: 2, symbolic: 3 };

/** The explanation of an answer that was not read by kind (too long or too deep): only what was extracted. */
function tooLong(gold: { answer: string; from: SideReading["from"] }, pred: { answer: string; from: SideReading["from"] }, why: string): Explanation {
  const side = (s: typeof gold): SideReading => ({ answer: s.answer, from: s.from, kind: "not read", read: "" });
  return { gold: side(gold), pred: side(pred), why };
}
