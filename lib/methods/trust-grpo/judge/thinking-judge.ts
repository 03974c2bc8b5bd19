/**
 * The thinking-reward interface of Trust-GRPO (docs/methods.md §6.3): a judge reads a problem and a whole
 * response and scores the quality of its reasoning in [0, 1]. Two back ends share it: a model
 * on our engine (engine-judge.ts) and an OpenAI-compatible endpoint (http-judge.ts). Both are
 * generative: the score is parsed from the judge's text and clipped to [0, 1]; a text with no
 * score gets the configured fallback and is counted.
 */

export interface JudgeRequest {
  problem: string;
  response: string;
}

export interface JudgeScore {
  /** in [0, 1] */
  score: number;
  /** false: no score could be parsed from the judge's text, `score` is the fallback */
  parsed: boolean;
  /** the judge's raw text */
  text: string;
}

export interface ThinkingJudge {
  /** one score per request, in order */
  score(requests: JudgeRequest[]): Promise<JudgeScore[]>;
  dispose(): void;
}

/** The default judge prompt; {problem} and {response} are replaced. */
export const THINKING_JUDGE_PROMPT =
  "You are grading the REASONING of a solution, not only its final answer.\n" +
  "Problem:\n{problem}\n\nSolution:\n{response}\n\n" +
  "Judge whether each step is logically sound, relevant and free of calculation errors, and whether the " +
  "reasoning supports the final answer. Reply with one line: `Score: s` where s is a number from 0 (no valid " +
  "reasoning) to 1 (flawless reasoning).";

export function judgePrompt(template: string, request: JudgeRequest): string {
  return template.split("{problem}").join(request.problem).split("{response}").join(request.response);
}

const NUMBER = String.raw`[-+]?(?:\d+(?:\.\d*)?|\.\d+)`;

function readScore(value: string, denominator?: string, percent?: string): number {
  let x = Number(value);
  if (denominator !== undefined) x /= Number(denominator);
  if (percent) x /= 100;
  return x;
}

/**
 * The score in a judge's text, clipped to [0, 1], or undefined when there is none. Read, in
 * order: the last `score: s` / `score = s` / `<score>s</score>` / `\boxed{s}`, else a reply that
 * is only a number. `s` may be a fraction `a/b` (e.g. 7/10) or a percentage (80%). A bare number
 * somewhere in free text is NOT read: a judge that echoes the solution's arithmetic would score it.
 */
export function parseJudgeScore(text: string): number | undefined {
  // `\boxed{` here only prefixes a score (no balance needed, no `\fbox`): not grading/extract.ts's answer box
  const scored = new RegExp(String.raw`(?:score\s*(?:[:=]|is)?\s*\**\s*|<score>\s*|\\boxed\{\s*)(${NUMBER})(?:\s*\/\s*(${NUMBER}))?\s*(%)?`, "gi");
  let value: number | undefined;
  for (const m of text.matchAll(scored)) value = readScore(m[1], m[2], m[3]);
  if (value === undefined) {
    const alone = new RegExp(String.raw`^\s*(${NUMBER})(?:\s*\/\s*(${NUMBER}))?\s*(%)?\s*\.?\s*$`).exec(text);
    if (alone) value = readScore(alone[1], alone[2], alone[3]);
  }
  if (value === undefined || !Number.isFinite(value)) return undefined;
  return Math.min(1, Math.max(0, value));
}

/** Turns judge texts into scores; unparseable texts take `fallback`. */
export function scoresFromTexts(texts: string[], fallback: number): JudgeScore[] {
  return texts.map((text) => {
    const score = parseJudgeScore(text);
    return score === undefined ? { score: fallback, parsed: false, text } : { score, parsed: true, text };
  });
}
