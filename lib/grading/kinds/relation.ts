/**
 * Equations and inequalities (docs/methods.md §7), chained or not.
 *
 * - A chain of `=` / `\approx` is a chain of steps: its last value counts (`x = 4+4+3 = 11` is x = 11);
 *   before an `\approx` the exact value counts too (`x = \frac{5}{2} \approx 2.5`: 5/2 or 2.5).
 * - An equation whose left side names a variable (`x`, `a_1`, `f(x)`) or has none (`4+4+3`, `\pi`)
 *   gives its value: `x = 3` equals `3`. Two equations are equal when they have the same left side
 *   and value, or when lhs − rhs of one is a constant multiple of the other's (`y = 2x + 1` and
 *   `2x - y + 1 = 0`), so `x = 3` ≠ `y = 3`.
 * - An inequality is compared with the same operator after both are written with `<` / `\le`, sides
 *   as rhs − lhs up to a positive factor (`x < 1` = `-x > -1` = `2x < 2`); in one variable with constant
 *   bounds it is also an interval (`0 < y < 1` = `(0, 1)`, `x \ge 5` = `[5, \infty)`).
 * - `(a,b) = (2,3)` reads as an assignment, `S_1 : S_2 = 3:7` as the ratio 3:7.
 */
import { allOf, anyOf, type Answer, type Comparer, describeKind, formatAnswer, type Reader, type RelationOperator, type Verdict } from "../answer";
import { splitTopLevel, splitTopLevelKeeping } from "../latex";

type Relation = Extract<Answer, { kind: "relation" }>;

const OPERATORS: RelationOperator[] = ["=", "\\approx", "<", "\\le", ">", "\\ge", "\\ne"];
const EQUALITY = new Set<RelationOperator>(["=", "\\approx"]);
/** `>` and `\ge` written the other way round */
const FLIPPED: Partial<Record<RelationOperator, RelationOperator>> = { ">": "<", "\\ge": "\\le" };

const GREEK = "alpha|beta|gamma|delta|epsilon|varepsilon|theta|lambda|mu|nu|rho|sigma|tau|phi|varphi|psi|omega";
/** a variable's name: a letter or Greek letter, subscripts and primes, an argument list: `x`, `a_1`, `S_{n}`, `f(x)`, `y'` */
const NAME = new RegExp(`^(?:[a-zA-Z]|\\\\(?:${GREEK}))(?:\\s*_\\s*(?:\\{[a-zA-Z0-9,]+\\}|[a-zA-Z0-9])|')*(?:\\s*\\([^()=]*\\))?$`);
/** a segment or an angle named by its points, `AB`, `ABC`: a ratio's term (`AB:BC = 5:4`) */
const SEGMENT = /^[A-Z]{2,3}$/;
/** LaTeX commands that name constants or operations, not variables */
const CONSTANT_COMMANDS = /\\(?:frac|sqrt|pi|infty|cdot|times|div|ln|log|exp|sin|cos|tan|cot|sec|csc)(?![a-zA-Z])/g;

export function isName(side: string): boolean {
  return NAME.test(side.trim());
}

/** No variable in it: digits, operators, constants (`\frac{\sqrt{3}}{2}`, `-\infty`); as an equation's left side, a computation step (`4+4+3 = 11`, `\pi \approx 3.14`) whose value is the right side. */
function isConstant(side: string): boolean {
  return !/[a-zA-Z\\]/.test(side.replace(CONSTANT_COMMANDS, ""));
}

/** `name = value` with a single `=`: the name and the value; else undefined. */
export function namedValue(s: string): { name: string; value: string } | undefined {
  const sides = splitTopLevel(s, ["="]);
  if (sides.length !== 2 || !isName(sides[0]) || sides[1] === "") return undefined;
  return { name: sides[0].replace(/\s+/g, ""), value: sides[1] };
}

/** `(a, b)`, a tuple of names; undefined otherwise. */
function namesOfTuple(s: string): string[] | undefined {
  const m = /^\((.*)\)$/.exec(s.trim());
  const names = m && splitTopLevel(m[1], [","]);
  return names && names.length > 1 && names.every(isName) ? names.map((n) => n.replace(/\s+/g, "")) : undefined;
}

/** The answer read as a relation (or what a relation here stands for); undefined when there is no top-level relation operator. */
export function readRelation(s: string, read: Reader): Answer | undefined {
  const { parts, separators } = splitTopLevelKeeping(s, OPERATORS);
  if (separators.length === 0) return undefined;
  if (parts[0] === "" && separators.length === 1 && separators[0] === "\\approx" && parts[1] !== "") return read(parts[1]); // "\approx 2.5"
  if (parts.some((p) => p === "")) return undefined;
  const operators = separators as RelationOperator[];
  if (operators.length === 1 && operators[0] === "=") {
    const names = namesOfTuple(parts[0]);
    const values = read(parts[1]);
    if (names && values.kind === "tuple" && values.items.length === names.length) return { kind: "assignment", names, values: values.items };
    const ratioNames = splitTopLevel(parts[0], [":"]);
    if (ratioNames.length > 1 && ratioNames.every((n) => isName(n) || SEGMENT.test(n)) && values.kind === "ratio") return values;
  }
  return { kind: "relation", sides: parts, operators };
}

/** An equality chain as one equation: its first side and the values it gives (the last side; the exact one before an `\approx`). */
function asEquation(r: Relation): { lhs: string; values: string[] } | undefined {
  if (!r.operators.every((op) => EQUALITY.has(op))) return undefined;
  const values = [r.sides[r.sides.length - 1]];
  const approx = r.operators.indexOf("\\approx");
  if (approx > 0 || (approx === 0 && !isName(r.sides[0]))) values.unshift(r.sides[approx]);
  return { lhs: r.sides[0], values: [...new Set(values)] };
}

/** Adjacent sides of a chain as simple relations `lhs op rhs`, with `>` and `\ge` turned round. */
function simpleRelations(r: Relation): { lhs: string; op: RelationOperator; rhs: string }[] {
  return r.operators.map((op, i) => {
    const flipped = FLIPPED[op];
    return flipped ? { lhs: r.sides[i + 1], op: flipped, rhs: r.sides[i] } : { lhs: r.sides[i], op, rhs: r.sides[i + 1] };
  });
}

/** An inequality in one variable with constant bounds as an interval: `0 < y \le 1` → (0, 1]; undefined otherwise. */
function asInterval(r: Relation, read: Reader): Answer | undefined {
  const allGreater = r.operators.every((op) => op === ">" || op === "\\ge");
  const sides = allGreater ? [...r.sides].reverse() : r.sides;
  const operators = allGreater ? [...r.operators].reverse().map((op) => FLIPPED[op]!) : r.operators;
  if (!operators.every((op) => op === "<" || op === "\\le")) return undefined;
  const bracket = (op: RelationOperator, open: boolean) => (op === "<" ? (open ? "(" : ")") : open ? "[" : "]");
  const interval = (low: string, open: string, high: string, close: string): Answer => ({ kind: "tuple", open, close, items: [read(low), read(high)] });
  if (sides.length === 2 && isName(sides[1]) && isConstant(sides[0])) return interval(sides[0], bracket(operators[0], true), "\\infty", ")");
  if (sides.length === 2 && isName(sides[0]) && isConstant(sides[1])) return interval("-\\infty", "(", sides[1], bracket(operators[0], false));
  if (sides.length === 3 && isName(sides[1]) && isConstant(sides[0]) && isConstant(sides[2])) {
    return interval(sides[0], bracket(operators[0], true), sides[2], bracket(operators[1], false));
  }
  return undefined;
}

/** Two equations: same left side and a common value, or lhs − rhs a constant multiple of the other's. */
function equationsEqual(g: { lhs: string; values: string[] }, p: { lhs: string; values: string[] }, compare: Comparer): Verdict {
  const sameLhs = compare.scalars(g.lhs, p.lhs, "equal");
  const valuePairs = g.values.flatMap((gv) => p.values.map((pv) => compare.scalars(gv, pv, "equal")));
  const gLast = g.values[g.values.length - 1];
  const pLast = p.values[p.values.length - 1];
  const multiple = compare.scalars(`(${g.lhs})-(${gLast})`, `(${p.lhs})-(${pLast})`, "multiple");
  const sameSides = sameLhs.equal && valuePairs.some((v) => v.equal);
  if (sameSides) return { equal: true, why: `same left side and value (${anyOf(valuePairs).why})` };
  if (multiple.equal) return { equal: true, why: "equivalent equations: lhs − rhs of one is a constant multiple of the other's" };
  return { equal: false, why: sameLhs.equal ? `same left side, different values (${anyOf(valuePairs).why})` : "different left sides, and lhs − rhs are not proportional" };
}

/** Two inequalities (or chains): the same simple relations, each with the same operator and rhs − lhs up to a positive factor. */
function inequalitiesEqual(g: Relation, p: Relation, compare: Comparer): Verdict {
  const gs = simpleRelations(g);
  const ps = simpleRelations(p);
  if (gs.length !== ps.length) return { equal: false, why: `${gs.length} relations vs ${ps.length}` };
  const verdicts = gs.map((a, i) => {
    const b = ps[i];
    if (a.op !== b.op) return { equal: false, why: `operators differ: ${a.op} vs ${b.op}` };
    const relation = a.op === "=" || a.op === "\\approx" || a.op === "\\ne" ? "multiple" : "positive multiple";
    const sides = compare.scalars(`(${a.rhs})-(${a.lhs})`, `(${b.rhs})-(${b.lhs})`, relation);
    return sides.equal ? sides : { equal: false, why: `${a.lhs} ${a.op} ${a.rhs} and ${b.lhs} ${b.op} ${b.rhs} are not equivalent` };
  });
  return allOf(verdicts, "equivalent inequalities: same operators, sides proportional by a positive factor");
}

/** A relation against an answer of any kind (one of the two is a relation). */
export function relationVerdict(gold: Answer, pred: Answer, compare: Comparer): Verdict {
  if (gold.kind === "relation" && pred.kind === "relation") {
    const ge = asEquation(gold);
    const pe = asEquation(pred);
    if (ge && pe) return equationsEqual(ge, pe, compare);
    if (ge || pe) return { equal: false, why: `gold is ${describeKind(gold)}, pred is ${describeKind(pred)}` };
    return inequalitiesEqual(gold, pred, compare);
  }
  const [relation, other, relationIsGold] = gold.kind === "relation" ? [gold, pred, true] : [pred as Relation, gold, false];
  const orient = (a: Answer, b: Answer) => (relationIsGold ? compare.answers(a, b) : compare.answers(b, a));
  const equation = asEquation(relation);
  if (equation) {
    if (!isName(equation.lhs) && !isConstant(equation.lhs)) {
      return { equal: false, why: `the equation's left side ${equation.lhs} is not a variable's name, so it gives no value to compare with ${describeKind(other)}` };
    }
    const verdicts = equation.values.map((value) => orient(compare.read(value), other));
    const verdict = anyOf(verdicts);
    return { equal: verdict.equal, why: `the equation gives ${equation.lhs} = ${equation.values.join(" or ")}: ${verdict.why}` };
  }
  const interval = asInterval(relation, compare.read);
  if (interval && (other.kind === "tuple" || other.kind === "set")) {
    const verdict = orient(interval, other);
    return { equal: verdict.equal, why: `the inequality is the interval ${formatAnswer(interval)}: ${verdict.why}` };
  }
  return { equal: false, why: `gold is ${describeKind(gold)}, pred is ${describeKind(pred)}` };
}
