// The verifier's kinds of answers (docs/methods.md §7): for each kind, the pairs of
// grading-kinds.cases.ts must be judged equal (both ways round) or not; the explanation that
// `grade --explain` writes; extraction's order of precedence; and 10 MB of pathological inputs
// graded within the per-answer budget.
import { extractFinalAnswer } from "../lib/grading/extract";
import { closeVerifier, DEFAULT_TIMEOUT_MS, gradeAnswer } from "../lib/grading/verify";
import { KIND_CASES } from "./grading-kinds.cases";

beforeAll(() => {
  // start the CAS worker outside the cases
  expect(gradeAnswer("\\sqrt{8}", "2\\sqrt{2}").correct).toBe(true);
});

afterAll(async () => {
  await closeVerifier();
});

// A generous budget: these check the rules, not the time bound (the machine running them may be loaded).
const RULES = { timeoutMs: 30_000 };

describe.each(Object.entries(KIND_CASES))("%s", (_kind, { equal, different }) => {
  test("has at least 10 equal and 5 different cases", () => {
    expect(equal.length).toBeGreaterThanOrEqual(10);
    expect(different.length).toBeGreaterThanOrEqual(5);
  });

  test.each(equal)("%s = %s", (gold, pred) => {
    const result = gradeAnswer(gold, pred, RULES);
    expect(result).toEqual(expect.objectContaining({ correct: true }));
    expect(result.method).not.toBe("none");
    expect(gradeAnswer(pred, gold, RULES).correct).toBe(true); // symmetric
  });

  test.each(different)("%s ≠ %s", (gold, pred) => {
    expect(gradeAnswer(gold, pred, RULES)).toEqual(expect.objectContaining({ correct: false, method: "none" }));
    expect(gradeAnswer(pred, gold, RULES).correct).toBe(false);
  });
});

describe("extraction precedence", () => {
  test.each([
    ["a box before a final answer phrase", "The final answer is $7$. Check: \\boxed{8}", "8", "box"],
    ["adjacent boxes are one answer", "the roots are $\\boxed{-2}$ \\text{ and } $\\boxed{1}$.", "-2, 1", "box"],
    ["boxes with words between are not", "first \\boxed{1}, then \\boxed{2}", "2", "box"],
    ["the final answer phrase before math", "The final answer is $\\frac{3}{4}$. I hope it is correct, see $5$.", "\\frac{3}{4}", "final answer phrase"],
    ["display math of the final sentence", "We square both sides. Hence\n\\[ x = 4. \\]", "x = 4", "final math"],
    ["inline math joined by a separator", "The roots are $x=-2$ and $x=1$.", "x=-2, x=1", "final math"],
    ["math of an earlier sentence is not final", "We get $x = 3$. Counting again gives 5 apples in all.", "5", "last number"],
    ["a dollar amount is no math span", "It costs \\$5 and then \\$7 more.", "7", "last number"],
  ])("%s", (_name, text, answer, from) => {
    expect(extractFinalAnswer(text)).toEqual({ answer, from });
  });

  test("a bare answer is graded whole: its last number is not taken for it", () => {
    expect(gradeAnswer("x^2+1", "x^2+1").correct).toBe(true);
    expect(gradeAnswer("1", "x^2+1").correct).toBe(false);
    expect(gradeAnswer("12000", "12 000").correct).toBe(true); // not "000"
  });
});

describe("explanation", () => {
  test("says how each side was read and why they are equal", () => {
    expect(gradeAnswer("x \\ge 5", "So the answer is $5 \\le x$.", { explain: true })).toEqual({
      correct: true,
      method: "string", // both turned round to 5 \le x, the same sides
      explain: {
        gold: { answer: "x \\ge 5", from: "whole text", kind: "an inequality", read: "x \\ge 5" },
        pred: { answer: "5 \\le x", from: "final math", kind: "an inequality", read: "5 \\le x" },
        why: "equivalent inequalities: same operators, sides proportional by a positive factor",
      },
    });
  });

  test("says why two answers differ", () => {
    const result = gradeAnswer("x = 3", "y = 3", { explain: true });
    expect(result.correct).toBe(false);
    expect(result.explain?.why).toBe("different left sides, and lhs − rhs are not proportional");
    expect(gradeAnswer("(0, 1)", "0 \\le y < 1", { explain: true }).explain?.why).toBe("the inequality is the interval [0, 1): brackets differ: (…) vs […)");
    expect(gradeAnswer("\\{1, -2\\}", "\\boxed{1}, \\boxed{2}", { explain: true }).explain).toEqual(
      expect.objectContaining({ pred: { answer: "1, 2", from: "box", kind: "a set", read: "{1, 2}" }, why: "gold element 2 equals no pred element" }),
    );
  });

  test("is absent unless asked", () => {
    expect(gradeAnswer("1", "1")).toEqual({ correct: true, method: "string" });
  });
});

describe("time bound", () => {
  // 10 MB in all, each input built to defeat one shortcut: unclosed delimiters of each kind, long
  // runs of separators between boxes, relation chains, lists, deep brackets. Each is graded within
  // the default per-answer budget (none times out): the grader measures itself against its budget,
  // so no wall-time bound is asserted here. On the shared 2-core dev machine the slowest (boxes
  // joined by separators) took 0.3 s and all ten 0.7 s.
  const MB = 1 << 20;
  const fill = (unit: string) => unit.repeat(Math.ceil(MB / unit.length)).slice(0, MB);
  test.each([
    ["unclosed $", fill("$")],
    ["unclosed \\[ and \\(", fill("\\[\\(")],
    ["boxes joined by separators", fill("\\boxed{1}, ")],
    ["boxes joined by long gaps", fill("\\boxed{1}" + " and".repeat(20))],
    ["inline math joined by 'and'", fill("$x$ and ")],
    ["a relation chain", fill("x < ")],
    ["a list", fill("1, ")],
    ["open brackets", fill("(")],
    ["final answer phrases", fill("final answer is ")],
    ["spaced digits", fill("1 ")],
  ])("1 MB of %s", (_name, pred) => {
    expect(pred.length).toBe(MB);
    const result = gradeAnswer("1", pred, { timeoutMs: DEFAULT_TIMEOUT_MS });
    expect(result.timedOut).toBeUndefined();
  });
});
