/**
 * Ratios (docs/methods.md §7): `3:7`, also when named (`S_1 : S_2 = 3:7`, read by relation.ts). Two
 * ratios are equal term by term: `6:14` is not `3:7` (a ratio answer is asked in lowest terms, and
 * `9:30` may be a time of day).
 */
import { allOf, type Answer, type Comparer, type Verdict } from "../answer";
import { splitTopLevel } from "../latex";

type Ratio = Extract<Answer, { kind: "ratio" }>;

/** The answer read as a ratio `a : b (: c …)`; undefined without a top-level `:` or with an empty term. */
export function readRatio(s: string): Ratio | undefined {
  const terms = splitTopLevel(s, [":"]);
  return terms.length > 1 && terms.every((t) => t !== "") ? { kind: "ratio", terms } : undefined;
}

export function ratiosEqual(g: Ratio, p: Ratio, compare: Comparer): Verdict {
  if (g.terms.length !== p.terms.length) return { equal: false, why: `${g.terms.length} terms vs ${p.terms.length}` };
  const terms = g.terms.map((t, i) => compare.scalars(t, p.terms[i], "equal"));
  const failed = terms.findIndex((v) => !v.equal);
  if (failed >= 0) return { equal: false, why: `term ${failed + 1} differs: ${terms[failed].why}` };
  return allOf(terms, "equal term by term");
}
