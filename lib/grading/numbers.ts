/**
 * Numbers in exact rational arithmetic (docs/methods.md §7). Integers, fractions, powers with
 * integer exponents, and sums, products and quotients of them are exact: two exact values are equal
 * only when they are the same rational, so 10^{400} ≠ 10^{401} and 2^{100} ≠ 2^{100}+1, which
 * doubles cannot tell apart (both overflow to Infinity, or round to the same 53 bits). A value with
 * a decimal or scientific-notation literal in it is an approximation: it equals another value within
 * the relative tolerance REL_TOL (or ABS_TOL apart), and that test runs in exact arithmetic too, so
 * it never overflows.
 *
 * Arithmetic: fraction.js (BigInt rationals). Expressions arrive as the Compute Engine's MathJSON,
 * read without canonicalisation; the engine's own exact evaluation is not used: in 0.27 it rounds
 * powers to its `precision` (2^{100}+1 evaluates to 1267650600228229401500000000001 at the default
 * 21 digits), keeps float numerators in rationals (\frac{2^{100}}{3} becomes
 * [1.2676506002282294e+30, 3]), and `isEqual` calls 2^{100}+1 and 1267650600228229401496703205377
 * different.
 */
import Fraction from "fraction.js";

/** relative tolerance of comparisons with an approximate value */
export const REL_TOL = 1e-6;
/** values this close are equal even when the relative test fails (one of them 0) */
export const ABS_TOL = 1e-12;
/**
 * No exact value is computed with a numerator or denominator of more bits than this (≈ 1233 decimal
 * digits): fraction.js reduces every result by a gcd whose cost grows quadratically (a 4096-bit
 * gcd takes ~8 ms, a 16384-bit one ~150 ms).
 */
export const MAX_EXACT_BITS = 4096;

const REL_TOL_EXACT = new Fraction(1, 1_000_000);
const ABS_TOL_EXACT = new Fraction(1, 1_000_000_000_000);
const TOO_MANY_BITS = 1n << BigInt(MAX_EXACT_BITS);

/** A real number as an exact rational, and whether it was written exactly (no decimal or scientific literal). */
export interface RationalNumber {
  value: Fraction;
  exact: boolean;
}

/** An exact value that would need more than MAX_EXACT_BITS bits. */
export const TOO_LARGE = "too large";

/** Two numbers are equal: exactly when both are exact, else within REL_TOL (or ABS_TOL). */
export function numbersEqual(a: RationalNumber, b: RationalNumber): boolean {
  if (a.exact && b.exact) return a.value.equals(b.value);
  const difference = a.value.sub(b.value).abs();
  const larger = a.value.abs().gt(b.value.abs()) ? a.value.abs() : b.value.abs();
  return difference.lte(larger.mul(REL_TOL_EXACT)) || difference.lte(ABS_TOL_EXACT);
}

const DECIMAL_LITERAL = /^([-+]?)(\d*)(?:\.(\d*))?(?:e([-+]?\d+))?$/i;

/**
 * A number literal, `"-12"`, `"3.25"`, `".5"`, `"15e+399"` (the engine's form of big numbers): exact
 * when it has no fractional digits; undefined when it is not a plain literal (`"NaN"`, `"0.(3)"`).
 */
export function numberLiteral(text: string): RationalNumber | typeof TOO_LARGE | undefined {
  const m = DECIMAL_LITERAL.exec(text);
  if (!m || (m[2] === "" && (m[3] ?? "") === "")) return undefined;
  const [, sign, whole, fraction = "", exponentText = "0"] = m;
  const exponent = Number(exponentText) - fraction.length; // the value is (whole fraction) · 10^exponent
  if (Math.abs(exponent) * Math.log2(10) > MAX_EXACT_BITS) return TOO_LARGE;
  const digits = BigInt(sign + whole + fraction);
  const scale = 10n ** BigInt(Math.abs(exponent));
  const value = exponent >= 0 ? new Fraction(digits * scale, 1n) : new Fraction(digits, scale);
  return withinSize({ value, exact: fraction === "" });
}

/** An exact value that is not too large; TOO_LARGE otherwise. */
function withinSize(x: RationalNumber): RationalNumber | typeof TOO_LARGE {
  return x.value.n >= TOO_MANY_BITS || x.value.d >= TOO_MANY_BITS ? TOO_LARGE : x;
}

type Reading = RationalNumber | typeof TOO_LARGE | undefined;

/** Combines readings: undefined when any is undefined (not a number), TOO_LARGE when any is, else `op`'s result. */
function combine(readings: Reading[], op: (values: RationalNumber[]) => Reading): Reading {
  if (readings.some((r) => r === undefined)) return undefined;
  if (readings.some((r) => r === TOO_LARGE)) return TOO_LARGE;
  return op(readings as RationalNumber[]);
}

/** `op` folded over `values` left to right (at least one), stopping at the first result that is TOO_LARGE. */
function fold(values: RationalNumber[], op: (a: Fraction, b: Fraction) => Fraction): Reading {
  let result: RationalNumber = values[0];
  for (const x of values.slice(1)) {
    const next = withinSize({ value: op(result.value, x.value), exact: result.exact && x.exact });
    if (next === TOO_LARGE) return next;
    result = next;
  }
  return result;
}

/** base^exponent for an exact integer exponent; undefined otherwise (roots go to the CAS), and for 0^0 and 0 to a negative power. */
function power(base: RationalNumber, exponent: RationalNumber): Reading {
  const e = exponent.value;
  if (!exponent.exact || e.d !== 1n) return undefined;
  const b = base.value;
  if (b.n === 0n) return e.s > 0n && e.n > 0n ? { value: b, exact: base.exact } : undefined;
  if (b.n === 1n && b.d === 1n) return { value: b.s < 0n && e.n % 2n === 1n ? b : b.abs(), exact: base.exact };
  const bits = Number(e.n) * Math.max(b.n.toString(2).length, b.d.toString(2).length);
  if (bits > MAX_EXACT_BITS) return TOO_LARGE;
  return withinSize({ value: b.pow(e), exact: base.exact });
}

/**
 * The value of a Compute Engine MathJSON expression (as `ce.parse(latex, {canonical: false}).json`
 * gives it) made of numbers and + − × ÷ and integer powers; undefined for anything else (symbols,
 * roots, functions), TOO_LARGE when a value would exceed MAX_EXACT_BITS. `approximate` marks the
 * whole value as an approximation (the LaTeX had scientific notation, which the engine turns into
 * integers: `1.5e3` → 1500, `1e-400` → 0). `step` is called once per node (the caller's time budget).
 */
export function rationalOfMathJson(json: unknown, approximate: boolean, step: () => void = () => {}): Reading {
  const read = (node: unknown): Reading => {
    step();
    if (typeof node === "number") {
      if (!Number.isFinite(node)) return undefined;
      // a JS number: exact only as a safe integer (beyond that the engine has already rounded it)
      const literal = numberLiteral(String(node));
      return literal === undefined || literal === TOO_LARGE || Number.isSafeInteger(node) ? literal : { ...literal, exact: false };
    }
    if (typeof node === "object" && node !== null && !Array.isArray(node)) {
      const num = (node as { num?: unknown }).num;
      return typeof num === "string" ? numberLiteral(num) : undefined;
    }
    if (!Array.isArray(node) || node.length < 2) return undefined;
    const [head, ...args] = node as unknown[];
    const values = () => args.map(read);
    switch (head) {
      case "Delimiter":
        return args.length === 1 ? read(args[0]) : undefined; // (x); ["Delimiter", ["Sequence", …], "','"] is a list
      case "Negate":
        return args.length === 1 ? combine(values(), ([x]) => ({ value: x.value.neg(), exact: x.exact })) : undefined;
      case "Add":
        return combine(values(), (xs) => fold(xs, (a, b) => a.add(b)));
      case "Subtract":
        return args.length === 2 ? combine(values(), (xs) => fold(xs, (a, b) => a.sub(b))) : undefined;
      case "Multiply":
        return combine(values(), (xs) => fold(xs, (a, b) => a.mul(b)));
      case "Divide":
      case "Rational":
        if (args.length !== 2) return undefined;
        return combine(values(), (xs) => (xs[1].value.n === 0n ? undefined : fold(xs, (a, b) => a.div(b))));
      case "Power":
        return args.length === 2 ? combine(values(), ([base, exponent]) => power(base, exponent)) : undefined;
      default:
        return undefined;
    }
  };
  const value = read(json);
  return approximate && value !== undefined && value !== TOO_LARGE ? { ...value, exact: false } : value;
}
