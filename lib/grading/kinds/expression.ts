/**
 * Scalar leaves (docs/methods.md §7): numbers, text answers and expressions, decided in stages, the
 * first decisive one winning: the string form (normalize.ts), plain numbers compared exactly
 * (number.ts), text answers compared as words (never sent to the CAS), else the CAS
 * (cas.ts), whose verdict on two numbers is redone in exact arithmetic (numbers.ts).
 */
import type { GradeMethod } from "../answer";
import type { Budget } from "../budget";
import type { CasVerdict, ScalarRelation } from "../cas";
import { isTextAnswer, normalizeAnswer } from "../normalize";
import { MAX_EXACT_BITS, numbersEqual, rationalOfMathJson, TOO_LARGE } from "../numbers";
import { readNumber } from "./number";

export interface ScalarDecision {
  eq: boolean;
  /** the stage that decided */
  method: GradeMethod;
  /** why the pair could not be compared fully */
  error?: string;
  /** the decision in words, for `grade --explain` */
  why: string;
}

/** The string, number and text stages for two scalar leaves; undefined when only the CAS can tell. */
export function cheapScalarDecision(a: string, b: string, relation: ScalarRelation): ScalarDecision | undefined {
  const na = normalizeAnswer(a);
  const nb = normalizeAnswer(b);
  if (na === nb) return { eq: true, method: "string", why: `the same after normalisation: ${na}` };
  if (relation !== "equal") return undefined;
  const va = readNumber(a);
  const vb = readNumber(b);
  if (va !== undefined && vb !== undefined) {
    const eq = numbersEqual(va, vb);
    const how = va.exact && vb.exact ? "exactly" : "within the relative tolerance 1e-6";
    return { eq, method: "numeric", why: `${na} and ${nb} as numbers: ${eq ? `equal ${how}` : `different (compared ${how})`}` };
  }
  if (isTextAnswer(a) || isTextAnswer(b)) {
    const eq = na.toLowerCase() === nb.toLowerCase();
    return { eq, method: "string", why: `text answers ${eq ? "equal up to case" : "differ"}: ${na} vs ${nb}` };
  }
  return undefined;
}

/** Scientific notation, `1.5e3`: the engine reads it as a plain number, so it is marked as an approximation here. */
const SCIENTIFIC_NOTATION = /\d[eE][-+]?\d/;

const RELATION_WORDS: Record<ScalarRelation, [string, string]> = {
  equal: ["equal", "not equal"],
  multiple: ["constant multiples of each other", "not constant multiples of each other"],
  "positive multiple": ["positive multiples of each other", "not positive multiples of each other"],
};

/**
 * The CAS verdict on a scalar pair, overruled by exact arithmetic when both sides are numbers
 * (numbers.ts): the CAS compares doubles, which call 10^{400} and 10^{401} equal. A side that is a
 * plain number is taken as read there: the engine reads `1,024` as a list.
 */
export function casDecision(a: string, b: string, relation: ScalarRelation, verdict: CasVerdict | undefined, budget: Budget): ScalarDecision {
  const [yes, no] = RELATION_WORDS[relation];
  const byCas = (eq: boolean, error?: string): ScalarDecision => ({ eq, method: "symbolic", error, why: `${a} and ${b}: ${eq ? yes : no} by the CAS${error ? ` (${error})` : ""}` });
  if (verdict?.read === undefined) return byCas(verdict?.eq ?? false, verdict?.error);
  const step = () => budget.check("comparing numbers exactly");
  const x = readNumber(a) ?? rationalOfMathJson(verdict.read[0], SCIENTIFIC_NOTATION.test(a), step);
  const y = readNumber(b) ?? rationalOfMathJson(verdict.read[1], SCIENTIFIC_NOTATION.test(b), step);
  if (x === undefined || y === undefined) return byCas(verdict.eq, verdict.error); // not both numbers: the CAS decides
  if (x !== TOO_LARGE && y !== TOO_LARGE) {
    const eq = numbersEqual(x, y);
    return { eq, method: "symbolic", why: `${a} and ${b} evaluated exactly: ${eq ? "equal" : "different"}` };
  }
  if (verdict.same) return { eq: true, method: "symbolic", why: `${a} and ${b} are written alike (too large to compute exactly)` };
  const error = `${x === TOO_LARGE ? a : b} is too large to compare exactly (over ${MAX_EXACT_BITS} bits), and the two are not written alike`;
  return { eq: false, method: "symbolic", error, why: error };
}
