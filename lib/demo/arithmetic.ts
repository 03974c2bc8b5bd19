/**
 * The synthetic task of the embedded demo (docs/methods.md §10): multi-step arithmetic on small
 * integers, whose answers a program can check. Solutions are written step by step, so a
 * model can make (and learn to fix) a slip in one step.
 *
 *   problem      "7+5-3"        answer "9"
 *   at a glance  "9 \boxed{9}"                 (the demo's first attempt o1)
 *   solution     "7+5=12 12-3=9 \boxed{9}"     (its careful re-solve o2)
 */
import type { Example } from "../rl/data";
import { seededRandom } from "../util/random";

export interface ArithmeticOptions {
  /** numbers per problem (>= 2) */
  terms: number;
  /** operands are drawn from 1..maxOperand */
  maxOperand: number;
}

export const DEMO_ARITHMETIC: ArithmeticOptions = { terms: 3, maxOperand: 9 };

interface Step {
  left: number;
  op: "+" | "-";
  right: number;
  value: number;
}

function parseTerms(problem: string): { first: number; rest: { op: "+" | "-"; value: number }[] } {
  const tokens = problem.match(/\d+|[+-]/g) ?? [];
  const first = Number(tokens[0]);
  const rest: { op: "+" | "-"; value: number }[] = [];
  for (let i = 1; i + 1 < tokens.length; i += 2) rest.push({ op: tokens[i] as "+" | "-", value: Number(tokens[i + 1]) });
  return { first, rest };
}

function solveSteps(problem: string): Step[] {
  const { first, rest } = parseTerms(problem);
  const steps: Step[] = [];
  let acc = first;
  for (const { op, value } of rest) {
    const next = op === "+" ? acc + value : acc - value;
    steps.push({ left: acc, op, right: value, value: next });
    acc = next;
  }
  return steps;
}

/** `count` distinct-seeded problems. Ids are stable for a seed. */
export function arithmeticProblems(count: number, seed: number, options: ArithmeticOptions = DEMO_ARITHMETIC): Example[] {
  const random = seededRandom(seed);
  const operand = () => 1 + Math.floor(random() * options.maxOperand);
  return Array.from({ length: count }, (_, i) => {
    let problem = String(operand());
    for (let t = 1; t < options.terms; t++) problem += (random() < 0.5 ? "+" : "-") + operand();
    const steps = solveSteps(problem);
    return { id: `arith-${seed}-${i}`, problem, answer: String(steps[steps.length - 1].value) };
  });
}

/**
 * A step-by-step solution. With `slipAt`, that step's result is off by `slipBy` and the
 * error propagates, so the final answer is wrong: the kind of mistake a re-solve can fix.
 */
export function writeSolution(problem: string, slip?: { at: number; by: number }): string {
  const parts: string[] = [];
  let carried: number | undefined;
  for (const [i, step] of solveSteps(problem).entries()) {
    const left = carried ?? step.left;
    let value = step.op === "+" ? left + step.right : left - step.right;
    if (slip && slip.at === i) value += slip.by;
    parts.push(`${left}${step.op}${step.right}=${value}`);
    carried = value;
  }
  return `${parts.join(" ")} \\boxed{${carried}}`;
}

/**
 * A first attempt at a glance: the answer without the steps, `9 \boxed{9}`. Off by 1 or 2
 * with probability `errorRate` (seeded). A small model computes a three-term result in one
 * jump far less reliably than step by step, which is what leaves room for a correction.
 */
export function sampleQuickAnswer(problem: string, errorRate: number, random: () => number): string {
  const steps = solveSteps(problem);
  let value = steps[steps.length - 1].value;
  if (random() < errorRate) value += random() < 0.5 ? -1 - Math.floor(random() * 2) : 1 + Math.floor(random() * 2);
  return `${value} \\boxed{${value}}`;
}

/**
 * A re-solve that lands on `answer` whatever the steps say: its last step slips by the
 * difference. A corrector with confirmation bias, that keeps a wrong first answer.
 */
export function writeSolutionReaching(problem: string, answer: number): string {
  const steps = solveSteps(problem);
  const by = answer - steps[steps.length - 1].value;
  return writeSolution(problem, by === 0 ? undefined : { at: steps.length - 1, by });
}

/** A solution that is wrong with probability `errorRate` (one slipped step, seeded). */
export function sampleSolution(problem: string, errorRate: number, random: () => number): string {
  if (random() >= errorRate) return writeSolution(problem);
  const steps = solveSteps(problem).length;
  const by = random() < 0.5 ? -1 - Math.floor(random() * 2) : 1 + Math.floor(random() * 2);
  return writeSolution(problem, { at: Math.floor(random() * steps), by });
}
