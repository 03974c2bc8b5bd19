/**
 * Sets, tuples and intervals, and lists of solutions (docs/methods.md §7). Tuples and intervals are
 * ordered and their brackets must match (`(1,2]` is not `[1,2]`); sets, bare lists (`1, -2`, or any
 * of `and`, `or`, `;` between), `\cup` unions and `a \pm b` are unordered, compared by a perfect
 * matching of their elements, each element compared by its own kind. A list of equations naming one
 * variable (`x=-2 \text{ or } x=1`) is the set of its values; naming different ones (`a=2, b=3`), an
 * assignment (assignment.ts).
 */
import { allOf, type Answer, type Comparer, type Reader, type Verdict } from "../answer";
import { closingDelimiter, splitTopLevel } from "../latex";
import { namedValue } from "./relation";

/** `a \pm b` → [a+b, a−b]; `\pm b` → [b, −b]; anything else → [s]. */
function expandPlusMinus(s: string): string[] {
  const parts = splitTopLevel(s, ["\\pm", "\\mp"]);
  if (parts.length !== 2 || parts[1] === "") return [s];
  const [a, b] = parts;
  const negated = splitTopLevel(b, ["+", "-"]).length > 1 ? `-(${b})` : `-${b}`;
  return a === "" ? [b, negated] : [`${a}+${b}`, `${a}${negated}`];
}

/**
 * A list's items: the values of `x = v` items when they all name one variable (the first may name it
 * alone: `x = 1, 2`), an assignment when each names a different one, else the items themselves.
 */
function readList(items: string[], read: Reader): Answer {
  const named = items.map(namedValue);
  const names = named.map((n) => n?.name);
  if (names.length > 1 && names.every((n) => n !== undefined) && new Set(names).size === names.length) {
    return { kind: "assignment", names: names as string[], values: named.map((n) => read(n!.value)) };
  }
  const first = names[0];
  if (first !== undefined && names.every((n) => n === undefined || n === first)) {
    return unordered(items.map((item, i) => named[i]?.value ?? item), read);
  }
  return unordered(items, read);
}

function unordered(items: string[], read: Reader): Answer {
  const flat = items.flatMap(expandPlusMinus).filter((x) => x !== "");
  return { kind: "set", items: flat.map(read) };
}

/** A number with thousands separators (`1,234`), which is not a list. */
const THOUSANDS = /^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/;

/** The answer read as a union, a set, a tuple or interval, a list or `a \pm b`; undefined when it is none of these. */
export function readCollection(s: string, read: Reader): Answer | undefined {
  const union = splitTopLevel(s, ["\\cup"]);
  if (union.length > 1) return { kind: "set", items: union.map(read) };

  if (s.startsWith("\\{")) {
    const close = closingDelimiter(s);
    if (close && close.end === s.length && s.slice(close.start, close.end) === "\\}") {
      const inner = s.slice(2, close.start).trim();
      return inner === "" ? { kind: "set", items: [] } : readList(splitTopLevel(inner, [",", ";"]), read);
    }
  }

  if (s[0] === "(" || s[0] === "[") {
    const close = closingDelimiter(s);
    if (close && close.end === s.length && (s[close.start] === ")" || s[close.start] === "]")) {
      const items = splitTopLevel(s.slice(1, close.start), [","]);
      if (items.length === 1) return read(items[0]); // grouping brackets
      return { kind: "tuple", open: s[0], close: s[close.start], items: items.map(read) };
    }
  }

  if (!THOUSANDS.test(s.replace(/\s+/g, ""))) {
    const items = splitTopLevel(s, [",", ";"]);
    if (items.length > 1) return readList(items, read);
  }

  const plusMinus = expandPlusMinus(s);
  return plusMinus.length > 1 ? unordered(plusMinus, read) : undefined;
}

/** Same brackets, same length, equal item by item. */
export function tuplesEqual(g: Extract<Answer, { kind: "tuple" }>, p: Extract<Answer, { kind: "tuple" }>, compare: Comparer): Verdict {
  if (p.open !== g.open || p.close !== g.close) return { equal: false, why: `brackets differ: ${g.open}…${g.close} vs ${p.open}…${p.close}` };
  if (p.items.length !== g.items.length) return { equal: false, why: `${g.items.length} items vs ${p.items.length}` };
  const items = g.items.map((item, i) => compare.answers(item, p.items[i]));
  const failed = items.findIndex((v) => !v.equal);
  if (failed >= 0) return { equal: false, why: `item ${failed + 1} differs: ${items[failed].why}` };
  return allOf(items, `equal item by item (${g.items.length})`);
}

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

/** Same size, and the elements pair up equal in some order. */
export function setsEqual(g: Extract<Answer, { kind: "set" }>, p: Extract<Answer, { kind: "set" }>, compare: Comparer): Verdict {
  if (p.items.length !== g.items.length) return { equal: false, why: `${g.items.length} elements vs ${p.items.length}` };
  const equal = g.items.map((a) => p.items.map((b) => compare.answers(a, b).equal));
  if (perfectMatching(equal)) return { equal: true, why: `the ${g.items.length} elements pair up equal, in any order` };
  const unmatched = equal.findIndex((row) => !row.some(Boolean));
  return { equal: false, why: unmatched >= 0 ? `gold element ${unmatched + 1} equals no pred element` : "the elements do not pair up one to one" };
}
