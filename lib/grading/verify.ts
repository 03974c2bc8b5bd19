/**
 * Answer verification (docs/methods.md §7): is a predicted final answer equivalent to the gold one?
 *
 * Comparison chain, first decisive stage wins:
 *   (a) string   — both answers normalised (`$`, `\left`/`\right`, `\!` `\,` spacing, `\text{…}` units,
 *                  `^\circ`, `\%`, trailing `.`, `\dfrac`/`\tfrac` → `\frac`, `\frac 34` → `\frac{3}{4}`,
 *                  a single-variable left side `x = …` dropped, `\text{(B)}` → `B`) and compared;
 *   (b) numeric  — both parse as plain numbers (thousands separators, decimals, a/b, `\frac{a}{b}`,
 *                  mixed numbers `1\frac{4}{5}` = 1.8, units/currency/percent stripped): two exact
 *                  values (integers, fractions of integers) must be equal exactly, a decimal within a
 *                  relative tolerance of 1e-6; both in exact rational arithmetic (numbers.ts), so no
 *                  value overflows or rounds. Percent convention (as the MATH/GSM8K graders): the `%`
 *                  sign is dropped, so "50\%" = "50", and "50\%" ≠ "0.5".
 *   (c) symbolic — the answers are split into structure here (intervals and tuples: ordered, brackets
 *                  must match; sets, bare comma lists, `\cup` unions and `a \pm b`: unordered; matrices:
 *                  same shape, element-wise; equations: same sides or same `lhs − rhs` up to sign), and
 *                  each pair of scalar leaves not settled by (a)/(b) is compared by the Compute Engine
 *                  CAS (`@cortex-js/compute-engine`). Two numbers made of integers, fractions, integer
 *                  powers, sums and products (`2^{100}+1`, `1e400`) are compared by the rule of (b),
 *                  exactly (the engine parses, numbers.ts computes); otherwise structurally identical,
 *                  else equal numeric values in doubles (closed forms: π, roots, complex numbers), else
 *                  — with free variables — equal values at 4 fixed points (probabilistic identity
 *                  test; the points include negatives).
 *
 * Time bound: `timeoutMs` (default 2000 ms) is the budget of the whole call: answer extraction,
 * normalisation, the CAS and the exact arithmetic. Past it the answer is judged incorrect, with
 * `timedOut` and an `error` that names the stage. Extraction is linear in the text (extract.ts) and
 * is checked against the budget when it ends. The CAS is synchronous and can run away (`100000!`
 * takes seconds, a 10^(10^10) at full precision exhausts the heap), so it runs in a worker thread
 * that this thread waits on with `Atomics.wait` for what is left of the budget; past it the worker
 * is terminated (a fresh one starts on the next call). The worker also has a 512 MB heap cap. Exact
 * arithmetic checks the budget at every node, and numbers.ts caps its numbers at MAX_EXACT_BITS.
 * Answers longer than MAX_ANSWER_CHARS (1000) are only compared verbatim, and answers nested deeper than
 * MAX_NESTING_DEPTH (32) only as normalised strings, which keeps the normalisation, numeric and
 * structure stages (at worst quadratic in that length) well under a millisecond.
 * So one call takes at most ≈ timeoutMs plus what extraction of a huge text takes beyond it (~0.1 s
 * per MB here), plus, on the first call or after a restart, the worker's start-up (loading the
 * CAS, ~0.1–0.5 s; at most CAS_STARTUP_MS), which is not counted.
 *
 * Nothing here throws on weird input: failures come back as `correct: false` with `error`.
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";

import { closingBrace, extractAnswer, hasBoxCommand, withoutWrappingBoxes } from "./extract";
import { ABS_TOL, MAX_EXACT_BITS, numberLiteral, numbersEqual, type RationalNumber, rationalOfMathJson, REL_TOL, TOO_LARGE } from "./numbers";

export type GradeMethod = "string" | "numeric" | "symbolic" | "none";

export interface GradeResult {
  correct: boolean;
  /** the stage that proved equality; "none" when no stage did */
  method: GradeMethod;
  /** why the answers could not be compared fully (parse failure, budget exceeded, …) */
  error?: string;
  /** the call ran past its budget (`error` says in which stage); the answer is judged incorrect */
  timedOut?: true;
}

export interface VerifyOptions {
  /** wall-clock budget of one whole call (answer extraction, normalisation, CAS, exact arithmetic), in ms (default DEFAULT_TIMEOUT_MS) */
  timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 2000;
/** answers longer than this (after box extraction) are only compared verbatim: it bounds every later stage */
export const MAX_ANSWER_CHARS = 1000;
/** answers nested deeper than this (brackets and braces) only get the string comparison */
export const MAX_NESTING_DEPTH = 32;
/** the most scalar leaf pairs one call may compare (two 50-element sets), and send to the CAS */
const MAX_LEAF_PAIRS = 2500;
const MAX_CAS_PAIRS = 400;
/** how long to wait for the CAS worker to load the Compute Engine */
const CAS_STARTUP_MS = 20000;

// ---------------------------------------------------------------------------------------------
// LaTeX scanning helpers

/** A LaTeX macro argument at `i` (after spaces): a `{group}`, a `\command` or one character. */
function readArgument(s: string, i: number): { text: string; end: number } | undefined {
  while (i < s.length && s[i] === " ") i++;
  if (i >= s.length) return undefined;
  if (s[i] === "{") {
    const close = closingBrace(s, i);
    return close < 0 ? undefined : { text: s.slice(i + 1, close), end: close + 1 };
  }
  if (s[i] === "\\") {
    const m = /^\\(?:[a-zA-Z]+|.)/.exec(s.slice(i));
    return m ? { text: m[0], end: i + m[0].length } : undefined;
  }
  if (s[i] === "}") return undefined;
  return { text: s[i], end: i + 1 };
}

interface Token {
  text: string;
  start: number;
  /** +1 opens a group, -1 closes one, 0 otherwise */
  delta: number;
}

/** Tokens with grouping: `{ ( [ \{` open and `} ) ] \}` close (brackets may mix: `(1,2]`). */
function* tokens(s: string): Generator<Token> {
  for (let i = 0; i < s.length; ) {
    let text: string;
    if (s[i] === "\\") text = /^\\(?:[a-zA-Z]+|\\|.?)/.exec(s.slice(i, i + 40))![0];
    else text = s[i];
    const delta = text === "{" || text === "(" || text === "[" || text === "\\{" ? 1 : text === "}" || text === ")" || text === "]" || text === "\\}" ? -1 : 0;
    yield { text, start: i, delta };
    i += text.length;
  }
}

/** The deepest grouping level in `s`. */
function nestingDepth(s: string): number {
  let depth = 0;
  let deepest = 0;
  for (const t of tokens(s)) {
    depth = Math.max(0, depth + t.delta);
    deepest = Math.max(deepest, depth);
  }
  return deepest;
}

/** Split at top-level (depth 0) occurrences of the given tokens (",", "\\cup", "&", "\\\\", "=", "\\pm"). */
function splitTopLevel(s: string, separators: readonly string[]): string[] {
  const parts: string[] = [];
  let depth = 0;
  let from = 0;
  for (const t of tokens(s)) {
    depth += t.delta;
    if (depth === 0 && t.delta === 0 && separators.includes(t.text)) {
      parts.push(s.slice(from, t.start));
      from = t.start + t.text.length;
    }
  }
  parts.push(s.slice(from));
  return parts.map((p) => p.trim());
}

/** Index of the token closing the group opened at index 0, or -1. */
function closingDelimiter(s: string): { start: number; end: number } | undefined {
  let depth = 0;
  for (const t of tokens(s)) {
    depth += t.delta;
    if (depth === 0) return t.delta === -1 ? { start: t.start, end: t.start + t.text.length } : undefined;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Normalisation (stage a)

const TEXT_COMMAND = /\\(?:text|textrm|textbf|textit|textnormal|textsf|texttt|mbox|mathrm)\s*\{/;

/** Unwrap `\text{…}`-like commands: the whole answer → its content; `and`/`or` → ","; unit words after a value → dropped. */
function handleTextCommands(s: string): string {
  for (let guard = 0; guard < 100; guard++) {
    const m = TEXT_COMMAND.exec(s);
    if (!m) return s;
    const open = m.index + m[0].length - 1;
    const close = closingBrace(s, open);
    if (close < 0) return s.slice(0, m.index) + s.slice(open + 1); // broken: drop the command, keep the rest
    const content = s.slice(open + 1, close);
    const before = s.slice(0, m.index);
    let after = s.slice(close + 1);
    let replacement: string;
    if (/^\s*(?:and|or)\s*$/i.test(content)) replacement = ",";
    else if (before.trim().length > 0 && /^[a-zA-Z\s.]*$/.test(content)) {
      replacement = " "; // a unit or a word after the value: "5\text{ cm}^2" -> "5"
      after = after.replace(/^\s*\^\s*\{?\s*[23]\s*\}?/, "");
    } else replacement = content;
    s = before + replacement + after;
  }
  return s;
}

/** `\frac 34` → `\frac{3}{4}`, `\frac\pi2` → `\frac{\pi}{2}` (nested ones too). */
function bracesForFractions(s: string): string {
  for (let at = s.indexOf("\\frac"); at >= 0; at = s.indexOf("\\frac", at + 5)) {
    if (/[a-zA-Z]/.test(s[at + 5] ?? "")) continue; // \fraction…
    const numerator = readArgument(s, at + 5);
    const denominator = numerator && readArgument(s, numerator.end);
    if (!numerator || !denominator) continue;
    s = `${s.slice(0, at)}\\frac{${numerator.text}}{${denominator.text}}${s.slice(denominator.end)}`;
  }
  return s;
}

const GREEK = "alpha|beta|gamma|delta|epsilon|theta|lambda|mu|nu|rho|sigma|tau|phi|psi|omega";
const SINGLE_VARIABLE_LHS = new RegExp(`^(?:[a-zA-Z]|\\\\(?:${GREEK}))(?:_\\{?[a-zA-Z0-9]+\\}?)?\\s*=\\s*([^=]+)$`);

/**
 * LaTeX with the notational noise removed, spacing kept (the CAS needs `\cot x` to stay two tokens).
 * Used for the numeric, structure and CAS stages.
 */
export function cleanLatex(input: string): string {
  let s = withoutWrappingBoxes(String(input)); // a boxed gold or prediction: its content
  s = s.replace(/\\\$/g, " ").replace(/\$/g, " "); // math delimiters and currency
  s = s.replace(/\\(?:left|right)\s*[.|](?=\s|$|\\)/g, (t) => (t.endsWith("|") ? "|" : ""));
  s = s.replace(/\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])/g, "");
  s = s.replace(/\\\\|\\[!,;:> ]/g, (t) => (t === "\\\\" ? t : " ")); // thin spaces, not row breaks
  s = s.replace(/~/g, " ").replace(/\\q?quad(?![a-zA-Z])/g, " ");
  s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle)(?![a-zA-Z])/g, "");
  s = s.replace(/\\[dtc]frac(?![a-zA-Z])/g, "\\frac");
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|°|\^?\s*\\degree(?![a-zA-Z])/g, "");
  s = s.replace(/\\?%/g, "");
  s = handleTextCommands(s);
  s = s.replace(/\\(?:mathbf|boldsymbol|bm)\s*\{([^{}]*)\}/g, "$1"); // bold is typography
  s = bracesForFractions(s);
  s = s.replace(/\\sqrt\s*(?![\s{[])(\\[a-zA-Z]+|[^\s{[\\])/g, "\\sqrt{$1}");
  s = s.replace(/\\(?:varnothing|emptyset)(?![a-zA-Z])/g, "\\{\\}");
  s = s.replace(/\s+/g, " ").trim();
  s = s.replace(/(?:\s*\.)+$/, "").trim(); // trailing full stop
  s = s.replace(/(^|[^\d.])\.(\d)/g, "$10.$2"); // .5 -> 0.5
  s = s.replace(/^[a-zA-Z]\s*\\in\s*/, ""); // x \in [-2,7] -> [-2,7]
  const rhs = SINGLE_VARIABLE_LHS.exec(s);
  if (rhs) s = rhs[1].trim(); // x = 3 -> 3
  const choice = /^\(\s*([A-E])\s*\)$/.exec(s);
  if (choice) s = choice[1]; // (B) -> B
  return s;
}

/** The string-comparison form: cleanLatex without whitespace, `^{2}` → `^2`. */
export function normalizeAnswer(input: string): string {
  return cleanLatex(input)
    .replace(/\s+/g, "")
    .replace(/([_^])\{([^{}\\])\}/g, "$1$2");
}

// ---------------------------------------------------------------------------------------------
// Numbers (stage b)

const UNIT_WORDS =
  "cm|centimeters?|mm|millimeters?|km|kilometers?|m|meters?|inches|inch|in|feet|foot|ft|yards?|yd|miles?|mi|units?|sq|square|degrees?|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|mph|pounds?|lbs?|kg|g|grams?|liters?|ml|people|students|percent";
const TRAILING_UNIT = new RegExp(`^(.*?[\\d}])\\s*(?:(?:${UNIT_WORDS})(?![a-zA-Z])(?:\\s*\\^\\s*\\{?[23]\\}?)?\\s*)+$`);

/** An integer or decimal literal, thousands separators allowed; undefined past MAX_EXACT_BITS. */
function literal(text: string): RationalNumber | undefined {
  const value = numberLiteral(text.replace(/,/g, ""));
  return value === TOO_LARGE ? undefined : value;
}

/** a / b; undefined when either is undefined or b is 0. */
function quotient(a: RationalNumber | undefined, b: RationalNumber | undefined): RationalNumber | undefined {
  if (a === undefined || b === undefined || b.value.n === 0n) return undefined;
  return { value: a.value.div(b.value), exact: a.exact && b.exact };
}

/**
 * The answer as a plain number (see the module comment), or undefined. Integers, a/b and `\frac{a}{b}`
 * of integers and mixed numbers are exact; anything with a decimal point is an approximation.
 */
function readNumber(input: string): RationalNumber | undefined {
  let s = cleanLatex(input);
  const unit = TRAILING_UNIT.exec(s);
  if (unit && /\s|[a-z]{3,}/.test(s.slice(unit[1].length))) s = unit[1]; // "5 cm", "18dollars"; not "2m"
  s = s.replace(/\s+/g, "").replace(/^\+/, "");
  let negative = false;
  if (s.startsWith("-")) {
    negative = true;
    s = s.slice(1);
  }
  const DEC = "(\\d+(?:\\.\\d+)?|\\.\\d+)";
  let m: RegExpExecArray | null;
  let value: RationalNumber | undefined;
  if (/^\d{1,3}(?:,\d{3})+(?:\.\d+)?$|^\d+(?:\.\d+)?$|^\.\d+$/.test(s)) value = literal(s);
  else if ((m = new RegExp(`^${DEC}/${DEC}$`).exec(s))) value = quotient(literal(m[1]), literal(m[2]));
  else if ((m = new RegExp(`^\\\\frac\\{(-?)${DEC}\\}\\{${DEC}\\}$`).exec(s))) {
    value = quotient(literal(m[2]), literal(m[3]));
    if (value && m[1]) value = { value: value.value.neg(), exact: value.exact };
  } else if ((m = /^(\d+)\\frac\{(\d+)\}\{(\d+)\}$/.exec(s))) {
    const whole = literal(m[1]);
    const part = quotient(literal(m[2]), literal(m[3]));
    value = whole && part && { value: whole.value.add(part.value), exact: true };
  }
  return value && negative ? { value: value.value.neg(), exact: value.exact } : value;
}

/** A real number written plainly (see the module comment), as a double; undefined when there is none or it overflows. Never throws. */
export function parseNumber(input: string): number | undefined {
  const value = readNumber(input)?.value.valueOf();
  return value !== undefined && Number.isFinite(value) ? value : undefined;
}

/** Both answers are plain numbers (stage b), and equal: exactly when both are exact, else within REL_TOL. */
export function plainNumbersEqual(a: string, b: string): boolean {
  const x = readNumber(a);
  const y = readNumber(b);
  return x !== undefined && y !== undefined && numbersEqual(x, y);
}

// ---------------------------------------------------------------------------------------------
// Structure (stage c, before the CAS)

type Structure =
  | { kind: "scalar"; latex: string }
  /** tuples and intervals: brackets and order matter */
  | { kind: "ordered"; open: string; close: string; items: Structure[] }
  /** sets, bare comma lists, unions, `a \pm b` */
  | { kind: "unordered"; items: Structure[] }
  | { kind: "matrix"; rows: Structure[][] }
  | { kind: "equation"; lhs: string; rhs: string };

/** `a \pm b` → [a+b, a−b]; `\pm b` → [b, −b]; anything else → [s]. */
function expandPlusMinus(s: string): string[] {
  const parts = splitTopLevel(s, ["\\pm", "\\mp"]);
  if (parts.length !== 2 || parts[1] === "") return [s];
  const [a, b] = parts;
  const negated = splitTopLevel(b, ["+", "-"]).length > 1 ? `-(${b})` : `-${b}`;
  return a === "" ? [b, negated] : [`${a}+${b}`, `${a}${negated}`];
}

function unordered(items: string[]): Structure {
  const flat = items.flatMap(expandPlusMinus).filter((x) => x !== "");
  return { kind: "unordered", items: flat.map(parseStructure) };
}

function parseStructure(s: string): Structure {
  s = s.trim();
  const union = splitTopLevel(s, ["\\cup"]);
  if (union.length > 1) return { kind: "unordered", items: union.map(parseStructure) };

  const matrix = /^\\begin\{([pbBV]?matrix|smallmatrix|array)\}(?:\{[^}]*\})?([\s\S]*)\\end\{\1\}$/.exec(s);
  if (matrix) {
    const rows = splitTopLevel(matrix[2], ["\\\\"]).filter((r) => r !== "");
    return { kind: "matrix", rows: rows.map((r) => splitTopLevel(r, ["&"]).map(parseStructure)) };
  }

  if (s.startsWith("\\{")) {
    const close = closingDelimiter(s);
    if (close && close.end === s.length && s.slice(close.start, close.end) === "\\}") {
      const inner = s.slice(2, close.start).trim();
      return unordered(inner === "" ? [] : splitTopLevel(inner, [",", ";"]));
    }
  }

  if (s[0] === "(" || s[0] === "[") {
    const close = closingDelimiter(s);
    if (close && close.end === s.length && (s[close.start] === ")" || s[close.start] === "]")) {
      const items = splitTopLevel(s.slice(1, close.start), [","]);
      if (items.length === 1) return parseStructure(items[0]); // grouping brackets
      return { kind: "ordered", open: s[0], close: s[close.start], items: items.map(parseStructure) };
    }
  }

  if (!/^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s.replace(/\s+/g, ""))) {
    const items = splitTopLevel(s, [","]);
    if (items.length > 1) return unordered(items);
  }

  const plusMinus = expandPlusMinus(s);
  if (plusMinus.length > 1) return unordered(plusMinus);

  const sides = splitTopLevel(s, ["="]);
  if (sides.length === 2 && sides[0] !== "" && sides[1] !== "") return { kind: "equation", lhs: sides[0], rhs: sides[1] };
  return { kind: "scalar", latex: s };
}

function leafCount(s: Structure): number {
  switch (s.kind) {
    case "scalar":
      return 1;
    case "equation":
      return 2;
    case "matrix":
      return s.rows.reduce((n, row) => n + row.reduce((m, cell) => m + leafCount(cell), 0), 0);
    default:
      return s.items.reduce((n, item) => n + leafCount(item), 0);
  }
}

type ScalarOracle = (a: string, b: string) => boolean;

/** Does a matching pair every left and right item (a bipartite perfect matching)? */
function perfectMatching(equal: boolean[][]): boolean {
  const n = equal.length;
  const owner = new Array<number>(n).fill(-1);
  const tryAssign = (i: number, seen: boolean[]): boolean => {
    for (let j = 0; j < n; j++) {
      if (!equal[i][j] || seen[j]) continue;
      seen[j] = true;
      if (owner[j] < 0 || tryAssign(owner[j], seen)) {
        owner[j] = i;
        return true;
      }
    }
    return false;
  };
  for (let i = 0; i < n; i++) if (!tryAssign(i, new Array<boolean>(n).fill(false))) return false;
  return true;
}

/**
 * Structural equality with scalar leaves decided by `oracle`. Every leaf pair of matching shapes is
 * asked (no short-circuit), so a first pass with a recording oracle collects the whole CAS batch.
 */
function structuresEqual(g: Structure, p: Structure, oracle: ScalarOracle): boolean {
  if (g.kind === "unordered" && g.items.length === 1) return structuresEqual(g.items[0], p, oracle);
  if (p.kind === "unordered" && p.items.length === 1) return structuresEqual(g, p.items[0], oracle);
  const all = (xs: boolean[]) => xs.every(Boolean);
  switch (g.kind) {
    case "scalar":
      return p.kind === "scalar" && oracle(g.latex, p.latex);
    case "ordered":
      if (p.kind !== "ordered" || p.open !== g.open || p.close !== g.close || p.items.length !== g.items.length) return false;
      return all(g.items.map((item, i) => structuresEqual(item, p.items[i], oracle)));
    case "unordered":
      if (p.kind !== "unordered" || p.items.length !== g.items.length) return false;
      return perfectMatching(g.items.map((a) => p.items.map((b) => structuresEqual(a, b, oracle))));
    case "matrix":
      if (p.kind !== "matrix" || p.rows.length !== g.rows.length) return false;
      if (g.rows.some((row, i) => row.length !== p.rows[i].length)) return false;
      return all(g.rows.flatMap((row, i) => row.map((cell, j) => structuresEqual(cell, p.rows[i][j], oracle))));
    case "equation": {
      if (p.kind !== "equation") return false;
      const sameSides = all([oracle(g.lhs, p.lhs), oracle(g.rhs, p.rhs)]);
      const gDiff = `(${g.lhs})-(${g.rhs})`;
      const sameDifference = oracle(gDiff, `(${p.lhs})-(${p.rhs})`);
      const negatedDifference = oracle(gDiff, `(${p.rhs})-(${p.lhs})`);
      return sameSides || sameDifference || negatedDifference;
    }
  }
}

/** A word of 3+ letters that is not a LaTeX command: a text answer ("Evelyn", "east"), never sent to the CAS. */
function isTextAnswer(clean: string): boolean {
  const withoutNames = clean.replace(/\\(?:begin|end|operatorname|mathrm|mathbf|mathbb|mathcal)\s*\{[^{}]*\}/g, " ");
  return /(?:^|[^\\a-zA-Z])[a-zA-Z]{3,}/.test(withoutNames);
}

// ---------------------------------------------------------------------------------------------
// The CAS worker

/** Result of one scalar comparison in the CAS worker. */
interface CasVerdict {
  eq: boolean;
  /** the two sides are structurally identical (canonical forms), whatever their values */
  same?: boolean;
  error?: string;
  /** without free variables: both sides as MathJSON, not canonicalised (no number in them is rounded yet), for exact arithmetic here */
  read?: [unknown, unknown];
}

/**
 * Source of the CAS worker (plain JS, evaluated with `new Worker(src, {eval: true})` so that it runs
 * the same under ts-jest and compiled). The Compute Engine's UMD bundle is evaluated as CommonJS with
 * `vm`: its package.json says `"type": "module"`, so a plain `require` of the bundle makes Node load it
 * as an ES module that exports nothing. Protocol: the answer goes on `port`, then `flag[0] = 1` wakes
 * the waiting thread.
 */
const CAS_WORKER_SOURCE = String.raw`
"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const vm = require("node:vm");
const flag = new Int32Array(workerData.flag);
const port = workerData.port;
const REL_TOL = workerData.relTol;
const ABS_TOL = workerData.absTol;
// fixed sample points for the identity test: irrational-looking, both signs
const POINTS = [0.5772156649, 1.4142135623, -0.7390851332, 2.7182818284, -1.6180339887, 0.3183098862];

function reply(message) {
  port.postMessage(message);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}

let ComputeEngine;
let ce;
function newEngine() {
  ce = new ComputeEngine();
  ce.precision = "machine"; // doubles: fast, and 10^(10^10) becomes Infinity instead of a bignum
}
try {
  const mod = { exports: {} };
  const source = fs.readFileSync(workerData.cePath, "utf8");
  vm.runInThisContext("(function (exports, module) {" + source + "\n})", { filename: workerData.cePath })(mod.exports, mod);
  ComputeEngine = mod.exports.ComputeEngine;
  newEngine();
  warmUp();
  reply({ ready: true });
} catch (e) {
  reply({ ready: false, error: String((e && e.message) || e) });
}

// two overflowed values (10^{400} and 10^{401} are both Infinity) are not thereby equal
function close(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return false;
  const d = Math.abs(a - b);
  return d <= REL_TOL * Math.max(Math.abs(a), Math.abs(b)) || d <= ABS_TOL;
}

// the numeric value {re, im} of an expression, or null when it has none (symbols left, booleans, sets)
function valueOf(expr) {
  const n = expr.N();
  const re = n.re;
  const im = n.im;
  if (typeof re !== "number" || typeof im !== "number" || Number.isNaN(re) || Number.isNaN(im)) return null;
  return { re, im };
}

function sameValue(x, y) {
  return close(x.re, y.re) && close(x.im, y.im);
}

function compare(a, b) {
  // parsed as written, then canonicalised: the written form keeps every number as it was typed
  const writtenA = ce.parse(a, { canonical: false });
  const writtenB = ce.parse(b, { canonical: false });
  const A = writtenA.canonical;
  const B = writtenB.canonical;
  if (!A.isValid) return { eq: false, error: "the CAS cannot parse " + JSON.stringify(a) };
  if (!B.isValid) return { eq: false, error: "the CAS cannot parse " + JSON.stringify(b) };
  if (A.isNaN === true || B.isNaN === true) return { eq: false, error: "undefined value (NaN)" };
  const vars = Array.from(new Set(A.unknowns.concat(B.unknowns)));
  if (vars.length === 0) {
    // constants: the other thread redoes the comparison exactly where both are numbers (canonical
    // forms round: \frac{1}{10^{400}} and \frac{1}{10^{401}} both become 0)
    const read = [writtenA.json, writtenB.json];
    if (A.isSame(B)) return { eq: true, same: true, read };
    const x = valueOf(A);
    const y = valueOf(B);
    if (x === null || y === null) return { eq: false, read };
    if (![x.re, x.im, y.re, y.im].every(Number.isFinite)) return { eq: false, error: "a value overflows double precision: not compared by value", read };
    return { eq: sameValue(x, y), read };
  }
  if (A.isSame(B)) return { eq: true, same: true };
  if (vars.length > 8) return { eq: false, error: "too many free variables for the identity test" };
  for (let k = 0; k < 4; k++) {
    const sub = {};
    vars.forEach((v, j) => { sub[v] = POINTS[(k + 2 * j) % POINTS.length] * (1 + 0.37 * j); });
    const x = valueOf(A.subs(sub));
    const y = valueOf(B.subs(sub));
    if (x === null || y === null) return { eq: false }; // not numbers (booleans, sets): isSame already said no
    if (!sameValue(x, y)) return { eq: false };
  }
  return { eq: true };
}

// The engine's first parse, simplification and evaluation compile its rule tables (~50-100 ms idle,
// seconds on a loaded machine): pay that during start-up, which is outside the per-call budget,
// so a fresh worker's first comparison is as fast as any other.
function warmUp() {
  for (const [a, b] of [["\\sqrt{8}", "2\\sqrt{2}"], ["\\frac{x^2-1}{x-1}", "x+1"], ["\\pi r^2", "r^2\\pi"]]) {
    ce.pushScope();
    try {
      compare(a, b);
    } catch (e) {
      // warming only: a real call reports its own errors
    } finally {
      ce.popScope();
    }
  }
}

parentPort.on("message", (request) => {
  const results = [];
  for (const [a, b] of request.pairs) {
    try {
      ce.pushScope(); // symbols auto-declared while parsing die with the scope
      try {
        results.push(compare(a, b));
      } finally {
        ce.popScope();
      }
    } catch (e) {
      results.push({ eq: false, error: "CAS error: " + String((e && e.message) || e) });
      newEngine();
    }
  }
  reply({ results });
});
`;

interface CasWorker {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
}

let cas: CasWorker | undefined;

function startCas(): CasWorker {
  const cePath = require.resolve("@cortex-js/compute-engine");
  const shared = new SharedArrayBuffer(4);
  const flag = new Int32Array(shared);
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(CAS_WORKER_SOURCE, {
    eval: true,
    workerData: { flag: shared, port: port2, cePath, relTol: REL_TOL, absTol: ABS_TOL },
    transferList: [port2],
    resourceLimits: { maxOldGenerationSizeMb: 512 },
  });
  worker.unref(); // never keeps the process alive
  const self: CasWorker = { worker, port: port1, flag };
  // an 'error' event without a listener would crash the process; a dead worker is replaced instead
  worker.on("error", () => {
    if (cas === self) cas = undefined;
  });
  worker.on("exit", () => {
    if (cas === self) cas = undefined;
  });
  const waited = Atomics.wait(flag, 0, 0, CAS_STARTUP_MS);
  const hello = receiveMessageOnPort(port1)?.message as { ready?: boolean; error?: string } | undefined;
  if (waited === "timed-out" || !hello?.ready) {
    void worker.terminate();
    throw new Error(hello?.error ?? `the CAS worker did not start within ${CAS_STARTUP_MS} ms`);
  }
  return self;
}

/** Terminate the CAS worker (it is unref'd, so this is only needed for tidy shutdowns and tests). */
export async function closeVerifier(): Promise<void> {
  const current = cas;
  cas = undefined;
  if (current) {
    current.port.close();
    await current.worker.terminate();
  }
}

/**
 * Compare scalar LaTeX pairs in the CAS worker within what is left of `budget`; on overrun the worker
 * is killed and OverBudget is thrown. A worker's start-up does not count against the budget.
 */
function casCompare(pairs: [string, string][], budget: Budget): { verdicts?: CasVerdict[]; error?: string } {
  if (cas === undefined) {
    const startup = performance.now();
    try {
      cas = startCas();
    } catch (e) {
      return { error: `CAS unavailable: ${(e as Error).message}` };
    } finally {
      budget.exclude(performance.now() - startup);
    }
  }
  const current = cas;
  Atomics.store(current.flag, 0, 0);
  current.worker.postMessage({ pairs });
  const waited = Atomics.wait(current.flag, 0, 0, Math.max(1, budget.remainingMs()));
  if (waited === "timed-out") {
    cas = undefined;
    current.port.close();
    void current.worker.terminate();
    throw new OverBudget(budget.ms, "in the CAS");
  }
  const answer = receiveMessageOnPort(current.port)?.message as { results?: CasVerdict[] } | undefined;
  if (!answer?.results || answer.results.length !== pairs.length) return { error: "the CAS worker sent no answer" };
  return { verdicts: answer.results };
}

// ---------------------------------------------------------------------------------------------
// Public API

interface ScalarDecision {
  eq: boolean;
  method: GradeMethod;
  error?: string;
}

/** The wall-clock budget of one gradeAnswer call: extraction, normalisation, the CAS and the exact arithmetic. */
class Budget {
  private deadline: number;

  constructor(readonly ms: number) {
    this.deadline = performance.now() + ms;
  }

  remainingMs(): number {
    return this.deadline - performance.now();
  }

  /** Time that does not count against the budget (a CAS worker's start-up). */
  exclude(ms: number): void {
    this.deadline += ms;
  }

  /** Throws OverBudget, naming `stage`, once the budget is spent. */
  check(stage: string): void {
    if (this.remainingMs() < 0) throw new OverBudget(this.ms, stage);
  }
}

/** A gradeAnswer call ran past its budget: the answer is judged incorrect. */
class OverBudget extends Error {
  constructor(ms: number, stage: string) {
    super(`grading exceeded its ${ms} ms budget (${stage}); judged incorrect (a larger timeoutMs allows more)`);
  }
}

/** Scientific notation, `1.5e3`: the engine reads it as a plain number, so it is marked as an approximation here. */
const SCIENTIFIC_NOTATION = /\d[eE][-+]?\d/;

/**
 * The CAS verdict on a scalar pair, overruled by exact arithmetic when both sides are numbers
 * (numbers.ts): the CAS compares doubles, which call 10^{400} and 10^{401} equal. A side that is a
 * plain number (stage b) is taken as read there: the engine reads `1,024` as a list.
 */
function casDecision(a: string, b: string, verdict: CasVerdict | undefined, budget: Budget): ScalarDecision {
  const decision: ScalarDecision = { eq: verdict?.eq ?? false, method: "symbolic", error: verdict?.error };
  if (verdict?.read === undefined) return decision;
  const step = () => budget.check("comparing numbers exactly");
  const x = readNumber(a) ?? rationalOfMathJson(verdict.read[0], SCIENTIFIC_NOTATION.test(a), step);
  const y = readNumber(b) ?? rationalOfMathJson(verdict.read[1], SCIENTIFIC_NOTATION.test(b), step);
  if (x === undefined || y === undefined) return decision; // not both numbers: the CAS decides
  if (x !== TOO_LARGE && y !== TOO_LARGE) return { eq: numbersEqual(x, y), method: "symbolic" };
  if (verdict.same) return { eq: true, method: "symbolic" };
  return { eq: false, method: "symbolic", error: `${x === TOO_LARGE ? a : b} is too large to compare exactly (over ${MAX_EXACT_BITS} bits), and the two are not written alike` };
}

/** Stages (a), (b) and the text rule for two scalar leaves; undefined when only the CAS can tell. */
function cheapScalarDecision(a: string, b: string): ScalarDecision | undefined {
  const na = normalizeAnswer(a);
  const nb = normalizeAnswer(b);
  if (na === nb) return { eq: true, method: "string" };
  const va = readNumber(a);
  const vb = readNumber(b);
  if (va !== undefined && vb !== undefined) return { eq: numbersEqual(va, vb), method: "numeric" };
  if (isTextAnswer(a) || isTextAnswer(b)) return { eq: na.toLowerCase() === nb.toLowerCase(), method: "string" };
  return undefined;
}

/** Rewrites for notation the Compute Engine 0.27 cannot parse: `\binom{n}{k}` → `\frac{(n)!}{(k)!((n)-(k))!}`. */
function forCas(latex: string): string {
  for (let at = latex.search(/\\[dt]?binom(?![a-zA-Z])/); at >= 0; at = latex.search(/\\[dt]?binom(?![a-zA-Z])/)) {
    const command = /^\\[dt]?binom/.exec(latex.slice(at))![0];
    const n = readArgument(latex, at + command.length);
    const k = n && readArgument(latex, n.end);
    if (!n || !k) return latex; // malformed: the CAS reports it
    latex = `${latex.slice(0, at)}\\frac{(${n.text})!}{(${k.text})!((${n.text})-(${k.text}))!}${latex.slice(k.end)}`;
  }
  return latex;
}

const METHOD_RANK: Record<GradeMethod, number> = { none: 0, string: 1, numeric: 2, symbolic: 3 };

/** Grade a predicted answer (a bare answer, or a response whose last `\boxed{}` is taken) against the gold one. */
export function gradeAnswer(gold: string, pred: string, options: VerifyOptions = {}): GradeResult {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) return { correct: false, method: "none", error: `timeoutMs must be a positive number of milliseconds, got ${timeoutMs}` };
  try {
    return gradeUnsafe(gold, pred, new Budget(timeoutMs));
  } catch (e) {
    if (e instanceof OverBudget) return { correct: false, method: "none", error: e.message, timedOut: true };
    return { correct: false, method: "none", error: `verifier error: ${(e as Error)?.message ?? String(e)}` };
  }
}

/** True when `pred` is equivalent to `gold` (see gradeAnswer). */
export function isEquivalent(gold: string, pred: string, options: VerifyOptions = {}): boolean {
  return gradeAnswer(gold, pred, options).correct;
}

function answerOf(text: string): string {
  return hasBoxCommand(text) ? (extractAnswer(text) ?? "") : text;
}

function gradeUnsafe(goldInput: string, predInput: string, budget: Budget): GradeResult {
  if (typeof goldInput !== "string" || typeof predInput !== "string") {
    return { correct: false, method: "none", error: `gold and pred must be strings (got ${typeof goldInput} and ${typeof predInput})` };
  }
  const gold = answerOf(goldInput).trim();
  const pred = answerOf(predInput).trim();
  budget.check("extracting the answers");
  if (gold !== "" && gold === pred) return { correct: true, method: "string" };
  for (const [name, s] of [["gold", gold], ["pred", pred]] as const) {
    if (s.length > MAX_ANSWER_CHARS) return { correct: false, method: "none", error: `${name} answer is too long to compare (${s.length} > ${MAX_ANSWER_CHARS} chars)` };
  }
  const g = cleanLatex(gold);
  const p = cleanLatex(pred);
  if (g === "" || p === "") return { correct: false, method: "none", error: g === "" ? "empty gold answer" : "empty prediction" };
  if (normalizeAnswer(g) === normalizeAnswer(p)) return { correct: true, method: "string" };
  for (const [name, s] of [["gold", g], ["pred", p]] as const) {
    if (nestingDepth(s) > MAX_NESTING_DEPTH) return { correct: false, method: "none", error: `${name} answer is nested too deeply to compare beyond strings (> ${MAX_NESTING_DEPTH} levels)` };
  }

  const whole = cheapScalarDecision(g, p);
  if (whole?.method === "numeric" || (whole && isTextAnswer(g) && isTextAnswer(p))) {
    return { correct: whole.eq, method: whole.eq ? whole.method : "none" };
  }

  const gs = parseStructure(g);
  const ps = parseStructure(p);
  const leafPairs = leafCount(gs) * leafCount(ps);
  if (leafPairs > MAX_LEAF_PAIRS) return { correct: false, method: "none", error: `too many elements to compare (${leafPairs} pairs > ${MAX_LEAF_PAIRS})` };
  const decided = new Map<string, ScalarDecision>();
  const pending = new Map<string, [string, string]>();
  const key = (a: string, b: string) => `${a}\u0000${b}`;
  const recordingOracle: ScalarOracle = (a, b) => {
    const k = key(a, b);
    if (!decided.has(k) && !pending.has(k)) {
      const cheap = cheapScalarDecision(a, b);
      if (cheap) decided.set(k, cheap);
      else pending.set(k, [a, b]);
    }
    return decided.get(k)?.eq ?? false;
  };
  structuresEqual(gs, ps, recordingOracle);
  budget.check("normalising the answers");

  let casError: string | undefined;
  if (pending.size > 0) {
    const pairs = [...pending.values()];
    if (pairs.length > MAX_CAS_PAIRS) return { correct: false, method: "none", error: `too many elements to compare (${pairs.length} pairs > ${MAX_CAS_PAIRS})` };
    const { verdicts, error } = casCompare(
      pairs.map(([a, b]) => [forCas(a), forCas(b)]),
      budget,
    );
    casError = error;
    pairs.forEach(([a, b], i) => decided.set(key(a, b), casDecision(a, b, verdicts?.[i], budget)));
  }

  let method: GradeMethod = "none";
  const errors = new Set<string>();
  const finalOracle: ScalarOracle = (a, b) => {
    const d = decided.get(key(a, b));
    if (!d) return false;
    if (d.error) errors.add(d.error);
    if (d.eq && METHOD_RANK[d.method] > METHOD_RANK[method]) method = d.method;
    return d.eq;
  };
  const correct = structuresEqual(gs, ps, finalOracle);
  if (correct) return { correct, method: method === "none" ? "string" : method };
  const error = casError ?? [...errors][0];
  return error === undefined ? { correct: false, method: "none" } : { correct: false, method: "none", error };
}
