/**
 * An answer read by kind (docs/methods.md §7): the kinds, the verdict on two answers, and how both
 * are put in words for `grade --explain`. Each kind's reading and comparison is in kinds/;
 * answer-kinds.ts tries the readers in order and dispatches comparisons.
 */
import type { ScalarRelation } from "./cas";
import { isTextAnswer, normalizeAnswer } from "./normalize";
import { readNumber } from "./kinds/number";

/** The stage that proved equality; "none" when no stage did. */
export type GradeMethod = "string" | "numeric" | "symbolic" | "none";

/** A relation operator, in the spelling cleanLatex gives it. */
export type RelationOperator = "=" | "\\approx" | "<" | "\\le" | ">" | "\\ge" | "\\ne";

export type Answer =
  /** a number, a text answer or an expression: a scalar leaf */
  | { kind: "expression"; latex: string }
  /** tuples and intervals: brackets and order matter */
  | { kind: "tuple"; open: string; close: string; items: Answer[] }
  /** sets, lists of solutions, unions, `a \pm b`: order does not matter */
  | { kind: "set"; items: Answer[] }
  | { kind: "matrix"; rows: Answer[][] }
  /** equations and inequalities, chained or not: `x = 4+4+3 = 11`, `0 < y \le 1` */
  | { kind: "relation"; sides: string[]; operators: RelationOperator[] }
  /** values given by name: `(a,b) = (2,3)`, `a = 2, b = 3` */
  | { kind: "assignment"; names: string[]; values: Answer[] }
  /** `3:7` (also read from `S_1 : S_2 = 3:7`) */
  | { kind: "ratio"; terms: string[] };

/** Whether two answers are equal, and why, in words for `grade --explain`. */
export interface Verdict {
  equal: boolean;
  why: string;
}

/** The decision on two scalar leaves (see ScalarRelation for `relation`). */
export type ScalarOracle = (gold: string, pred: string, relation: ScalarRelation) => Verdict;

/** Reads an answer's LaTeX (cleaned); the kinds' readers get it to read their parts. */
export type Reader = (latex: string) => Answer;

/** What a kind's comparison may ask: another comparison of answers, the oracle on two leaves, or a reading of a part. */
export interface Comparer {
  answers(gold: Answer, pred: Answer): Verdict;
  scalars: ScalarOracle;
  read: Reader;
}

/** Every verdict is computed (the first pass records all CAS pairs); equal when all are. */
export function allOf(verdicts: Verdict[], whyEqual: string): Verdict {
  const failed = verdicts.find((v) => !v.equal);
  return failed ? { equal: false, why: failed.why } : { equal: true, why: whyEqual };
}

/** Every verdict is computed (see allOf); equal when one is: its reason, else the first reason against. */
export function anyOf(verdicts: Verdict[]): Verdict {
  return verdicts.find((v) => v.equal) ?? verdicts[0] ?? { equal: false, why: "nothing to compare" };
}

/** The kind of an answer in words: "a number", "an interval", … */
export function describeKind(a: Answer): string {
  switch (a.kind) {
    case "expression":
      if (readNumber(a.latex) !== undefined) return "a number";
      return isTextAnswer(a.latex) ? "a text answer" : "an expression";
    case "tuple":
      return a.open === "(" && a.close === ")" ? "a tuple or open interval" : "an interval";
    case "set":
      return "a set";
    case "matrix":
      return "a matrix";
    case "relation":
      return a.operators.every((op) => op === "=" || op === "\\approx") ? "an equation" : "an inequality";
    case "assignment":
      return "an assignment";
    case "ratio":
      return "a ratio";
  }
}

/** An answer as read, in one line: `{-2, 1}`, `[5, \infty)`, `x \ge 5`, `a = 2, b = 3`. */
export function formatAnswer(a: Answer): string {
  switch (a.kind) {
    case "expression":
      return normalizeAnswer(a.latex);
    case "tuple":
      return `${a.open}${a.items.map(formatAnswer).join(", ")}${a.close}`;
    case "set":
      return `{${a.items.map(formatAnswer).join(", ")}}`;
    case "matrix":
      return `[${a.rows.map((row) => `[${row.map(formatAnswer).join(", ")}]`).join(", ")}]`;
    case "relation":
      return a.sides.map((side, i) => (i === 0 ? normalizeAnswer(side) : `${a.operators[i - 1]} ${normalizeAnswer(side)}`)).join(" ");
    case "assignment":
      return a.names.map((name, i) => `${name} = ${formatAnswer(a.values[i])}`).join(", ");
    case "ratio":
      return a.terms.map(normalizeAnswer).join(" : ");
  }
}

/** How many scalar leaves an answer has: bounds the pairs one comparison can ask. */
export function leafCount(a: Answer): number {
  switch (a.kind) {
    case "expression":
      return 1;
    case "relation":
      return a.sides.length;
    case "ratio":
      return a.terms.length;
    case "matrix":
      return a.rows.reduce((n, row) => n + row.reduce((m, cell) => m + leafCount(cell), 0), 0);
    case "assignment":
      return a.names.length + a.values.reduce((n, v) => n + leafCount(v), 0);
    default:
      return a.items.reduce((n, item) => n + leafCount(item), 0);
  }
}
