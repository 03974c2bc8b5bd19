/**
 * The kinds of answers tried in order (docs/methods.md §7), and the comparison of two answers of any
 * kinds dispatched to the kinds' modules. Scalar leaves (numbers, text, expressions) are decided by a
 * ScalarOracle, which verify.ts backs with the string and number stages and the CAS.
 */
import { type Answer, type Comparer, describeKind, type ScalarOracle, type Verdict } from "./answer";
import { assignmentVerdict } from "./kinds/assignment";
import { readCollection, setsEqual, tuplesEqual } from "./kinds/collection";
import { matricesEqual, readMatrix } from "./kinds/matrix";
import { ratiosEqual, readRatio } from "./kinds/ratio";
import { readRelation, relationVerdict } from "./kinds/relation";

/**
 * The answer read by kind, readers in order of precedence: matrix, collection (union, set, tuple or
 * interval, list, `±`), relation (and what it reads as an assignment or a ratio), ratio, else a
 * scalar expression. `latex` is cleaned (normalize.ts).
 */
export function readAnswer(latex: string): Answer {
  const s = latex.trim();
  return readMatrix(s, readAnswer) ?? readCollection(s, readAnswer) ?? readRelation(s, readAnswer) ?? readRatio(s) ?? { kind: "expression", latex: s };
}

/** The verdict on two answers of any kinds (a one-element set is its element). */
export function compareAnswers(gold: Answer, pred: Answer, scalars: ScalarOracle): Verdict {
  const comparer: Comparer = { answers: (g, p) => compareAnswers(g, p, scalars), scalars, read: readAnswer };
  if (gold.kind === "set" && gold.items.length === 1) return compareAnswers(gold.items[0], pred, scalars);
  if (pred.kind === "set" && pred.items.length === 1) return compareAnswers(gold, pred.items[0], scalars);
  if ((gold.kind === "set") !== (pred.kind === "set")) {
    const sameValueList = oneValueInSeveralForms(gold, pred, comparer);
    if (sameValueList) return sameValueList;
  }
  if (gold.kind === "relation" || pred.kind === "relation") return relationVerdict(gold, pred, comparer);
  if (gold.kind === "assignment" || pred.kind === "assignment") return assignmentVerdict(gold, pred, comparer);
  if (gold.kind !== pred.kind) return { equal: false, why: `gold is ${describeKind(gold)}, pred is ${describeKind(pred)}` };
  switch (gold.kind) {
    case "expression":
      return scalars(gold.latex, (pred as typeof gold).latex, "equal");
    case "tuple":
      return tuplesEqual(gold, pred as typeof gold, comparer);
    case "set":
      return setsEqual(gold, pred as typeof gold, comparer);
    case "matrix":
      return matricesEqual(gold, pred as typeof gold, comparer);
    case "ratio":
      return ratiosEqual(gold, pred as typeof gold, comparer);
  }
}


/**
 * A list whose elements all equal the other answer is that answer written several ways
 * (`\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}`); undefined when that does not hold, so the
 * kinds decide (a list of two different roots is not one of them).
 */
function oneValueInSeveralForms(gold: Answer, pred: Answer, compare: Comparer): Verdict | undefined {
  const [list, other] = gold.kind === "set" ? [gold, pred] : [pred as Extract<Answer, { kind: "set" }>, gold];
  if (list.items.length < 2) return undefined;
  const verdicts = list.items.map((item) => (list === gold ? compare.answers(item, other) : compare.answers(other, item)));
  if (!verdicts.every((v) => v.equal)) return undefined;
  return { equal: true, why: `every element of the list is the same value: ${verdicts[0].why}` };
}
