/**
 * Values given by name (docs/methods.md §7): `(a,b) = (2,3)` and `a = 2, b = 3` (read by relation.ts and
 * collection.ts). Two assignments are equal when they name the same variables with equal values, in
 * any order; an assignment equals a tuple of its values in the order of its names: `(a,b) = (2,3)`
 * equals `(2,3)`, not `(3,2)`.
 */
import { allOf, type Answer, type Comparer, describeKind, type Verdict } from "../answer";

type Assignment = Extract<Answer, { kind: "assignment" }>;

/** An assignment against an answer of any kind (one of the two is an assignment). */
export function assignmentVerdict(gold: Answer, pred: Answer, compare: Comparer): Verdict {
  if (gold.kind === "assignment" && pred.kind === "assignment") return assignmentsEqual(gold, pred, compare);
  const [assignment, other, assignmentIsGold] = gold.kind === "assignment" ? [gold, pred, true] : [pred as Assignment, gold, false];
  if (other.kind !== "tuple" || other.open !== "(" || other.close !== ")") {
    return { equal: false, why: `gold is ${describeKind(gold)}, pred is ${describeKind(pred)}` };
  }
  if (other.items.length !== assignment.names.length) return { equal: false, why: `${assignment.names.length} named values vs a tuple of ${other.items.length}` };
  const values = assignment.values.map((v, i) => (assignmentIsGold ? compare.answers(v, other.items[i]) : compare.answers(other.items[i], v)));
  const failed = values.findIndex((v) => !v.equal);
  if (failed >= 0) return { equal: false, why: `the value of ${assignment.names[failed]} (tuple item ${failed + 1}) differs: ${values[failed].why}` };
  return allOf(values, `the tuple holds the values of (${assignment.names.join(", ")}) in that order`);
}

function assignmentsEqual(g: Assignment, p: Assignment, compare: Comparer): Verdict {
  const missing = g.names.filter((n) => !p.names.includes(n));
  if (missing.length > 0 || p.names.length !== g.names.length) {
    return { equal: false, why: `different names: (${g.names.join(", ")}) vs (${p.names.join(", ")})` };
  }
  const values = g.names.map((name, i) => compare.answers(g.values[i], p.values[p.names.indexOf(name)]));
  const failed = values.findIndex((v) => !v.equal);
  if (failed >= 0) return { equal: false, why: `the value of ${g.names[failed]} differs: ${values[failed].why}` };
  return allOf(values, "the same names with equal values");
}
