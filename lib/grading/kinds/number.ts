/**
 * The number kind (docs/methods.md §7): an answer written as a plain number, read in exact rational
 * arithmetic (../numbers.ts). Accepted forms: integers and decimals with thousands separators (`1,234`,
 * `12 000`, `12\,000`), `a/b`, `\frac{a}{b}`, mixed numbers (`1\frac{4}{5}`), and any of these with a
 * currency sign, a percent sign or word (`40\%`, `40 percent`, `40 pct`) or a unit word after it.
 * Integers and fractions of integers are exact; a decimal is an approximation (numbersEqual).
 * Percent convention (as the MATH/GSM8K graders): the sign or word is dropped, so `50\%` = `50`, not 0.5.
 * A decimal comma (`3,75`) is read only where it cannot be a list: see decimalCommaNumber.
 */
import { cleanLatex } from "../normalize";
import { numberLiteral, numbersEqual, type RationalNumber, TOO_LARGE } from "../numbers";

const UNIT_WORDS =
  "cm|centimeters?|mm|millimeters?|km|kilometers?|m|meters?|inches|inch|in|feet|foot|ft|yards?|yd|miles?|mi|units?|sq|square|degrees?|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|mph|pounds?|lbs?|kg|g|grams?|liters?|ml|people|students|percent|per cent|pct";
const TRAILING_UNIT = new RegExp(`^(.*?[\\d}])\\s*(?:(?:${UNIT_WORDS})(?![a-zA-Z])(?:\\s*\\^\\s*\\{?[23]\\}?)?\\s*)+$`);
/** digit groups separated by spaces (`12 000`, `1 234 567.5`, or after commas: `11, 111, 100`): thousands, not two numbers */
const SPACED_THOUSANDS = /^[-+]?\s*\d{1,3}(?:(?:,\s*|\s)\d{3})+(?:\.\d+)?$/;
const DEC = "(\\d+(?:\\.\\d+)?|\\.\\d+)";
const QUOTIENT = new RegExp(`^${DEC}/${DEC}$`);
const LATEX_FRACTION = new RegExp(`^\\\\frac\\{(-?)${DEC}\\}\\{${DEC}\\}$`);
const MIXED_NUMBER = /^(\d+)\\frac\{(\d+)\}\{(\d+)\}$/;

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

/** The answer without its unit, currency or percent word, or undefined when digits are split by spaces that are not thousands groups (`1 2`). */
function numberText(input: string): string | undefined {
  let s = cleanLatex(input);
  const unit = TRAILING_UNIT.exec(s);
  if (unit && /\s|[a-z]{3,}/.test(s.slice(unit[1].length))) s = unit[1]; // "5 cm", "18dollars", "40 pct"; not "2m"
  if (/\d\s+\d/.test(s) && !SPACED_THOUSANDS.test(s)) return undefined;
  return s.replace(/\s+/g, "").replace(/^\+/, "");
}

/** The answer as a plain number (see the module comment), or undefined. */
export function readNumber(input: string): RationalNumber | undefined {
  let s = numberText(input);
  if (s === undefined) return undefined;
  let negative = false;
  if (s.startsWith("-")) {
    negative = true;
    s = s.slice(1);
  }
  let m: RegExpExecArray | null;
  let value: RationalNumber | undefined;
  if (/^\d{1,3}(?:,\d{3})+(?:\.\d+)?$|^\d+(?:\.\d+)?$|^\.\d+$/.test(s)) value = literal(s);
  else if ((m = QUOTIENT.exec(s))) value = quotient(literal(m[1]), literal(m[2]));
  else if ((m = LATEX_FRACTION.exec(s))) {
    value = quotient(literal(m[2]), literal(m[3]));
    if (value && m[1]) value = { value: value.value.neg(), exact: value.exact };
  } else if ((m = MIXED_NUMBER.exec(s))) {
    const whole = literal(m[1]);
    const part = quotient(literal(m[2]), literal(m[3]));
    value = whole && part && { value: whole.value.add(part.value), exact: true };
  }
  return value && negative ? { value: value.value.neg(), exact: value.exact } : value;
}

/** One comma with 1, 2 or 4+ digits after it (3 would be a thousands separator), no space: `3,75`, `-0,5`. */
const DECIMAL_COMMA = /^([-+]?\d+),(\d{1,2}|\d{4,})$/;

/**
 * `3,75` read with a decimal comma, as 3.75; undefined when the answer is not of that form. Only
 * asked when the other answer is a decimal with a point: against a single decimal a two-element list
 * `3,75` can never be right, so reading it as the European decimal is the only reading that can be.
 */
export function decimalCommaNumber(input: string): RationalNumber | undefined {
  const m = DECIMAL_COMMA.exec(cleanLatex(input)); // no space after the comma: `1, 2` is a list
  return m ? readNumber(`${m[1]}.${m[2]}`) : undefined;
}

/** A number written with a decimal point (an approximation), the other side of a decimal comma. */
export function hasDecimalPoint(input: string): boolean {
  return /^[-+]?\d*\.\d+$/.test(numberText(input) ?? "");
}

/** A real number written plainly (see the module comment), as a double; undefined when there is none or it overflows. Never throws. */
export function parseNumber(input: string): number | undefined {
  const value = readNumber(input)?.value.valueOf();
  return value !== undefined && Number.isFinite(value) ? value : undefined;
}

/** Both answers are plain numbers, and equal: exactly when both are exact, else within REL_TOL. */
export function plainNumbersEqual(a: string, b: string): boolean {
  const x = readNumber(a);
  const y = readNumber(b);
  return x !== undefined && y !== undefined && numbersEqual(x, y);
}
