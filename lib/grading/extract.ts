/**
 * Final-answer extraction (docs/methods.md §7; §6.1 for the box conventions).
 *
 * Order of preference:
 *   1. the content of the last balanced `\boxed{…}` / `\fbox{…}` (or the brace-less `\boxed 5`);
 *   2. "The final answer is X" / "final answer: X";
 *   3. the last number in the text (sign, decimals, thousands separators, fractions like 3/4).
 * Nothing here throws on broken input: an unbalanced box is skipped, not an error.
 */

/** Where a balanced `\boxed{…}` / `\fbox{…}` sits in a text. */
export interface BoxedSpan {
  /** index of the backslash of `\boxed` / `\fbox` */
  start: number;
  /** index just past the closing brace: `text.slice(0, end)` keeps the box and drops what follows */
  end: number;
  /** the text between the outer braces, untrimmed */
  content: string;
}

/** A box command, `\boxed` or `\fbox` (`\boxedfoo` is another command). */
const BOX_COMMAND = /\\(?:boxed|fbox)(?![a-zA-Z])/g;
/** A box command with its opening brace at the start of a text (`\boxed {` too). */
const LEADING_BOX = /^\\(?:boxed|fbox)\s*\{/;

/** How many box commands the text holds, balanced or not. */
export function boxCommandCount(text: string): number {
  return text.match(BOX_COMMAND)?.length ?? 0;
}

/** The text holds a box command, balanced or not. */
export function hasBoxCommand(text: string): boolean {
  return text.search(BOX_COMMAND) >= 0; // search ignores the g flag and lastIndex
}

/**
 * For every `{` that opens a group, the index of its matching `}` (-1 when it never closes).
 * Escaped braces `\{` `\}` are literal characters in LaTeX and do not group. One pass, O(n).
 */
function matchBraces(text: string): Map<number, number> {
  const match = new Map<number, number>();
  const open: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++; // skip the escaped character (\{, \}, \\)
      continue;
    }
    if (c === "{") open.push(i);
    else if (c === "}" && open.length > 0) match.set(open.pop()!, i);
  }
  for (const i of open) match.set(i, -1);
  return match;
}

/**
 * Index of the `}` matching the `{` at `open`, or -1 when it never closes (escaped `\{` `\}` do not
 * group). `open` must hold a `{` that is not itself escaped (not after an odd run of backslashes).
 */
export function closingBrace(text: string, open: number): number {
  // a forward scan from `open`, not matchBraces: the verifier calls this once per macro argument
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++; // the same escapes as matchBraces
      continue;
    }
    if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return i;
  }
  return -1;
}

interface BoxHit {
  start: number;
  end: number;
  content: string;
  braced: boolean;
}

/**
 * Top-level boxes, left to right: a box nested inside another box is part of the outer content.
 * An unbalanced `\boxed{` is skipped. `\boxed 5` (no braces) takes the next token.
 */
function findBoxes(text: string): BoxHit[] {
  const braces = matchBraces(text);
  const hits: BoxHit[] = [];
  let from = 0;
  BOX_COMMAND.lastIndex = 0;
  for (let m = BOX_COMMAND.exec(text); m !== null; m = BOX_COMMAND.exec(text)) {
    if (m.index < from) continue; // inside the previous box
    let i = m.index + m[0].length;
    while (i < text.length && /\s/.test(text[i])) i++;
    if (text[i] === "{") {
      const close = braces.get(i) ?? -1;
      if (close < 0) continue; // unbalanced: not an answer
      hits.push({ start: m.index, end: close + 1, content: text.slice(i + 1, close), braced: true });
      from = close + 1;
      BOX_COMMAND.lastIndex = close + 1;
    } else if (i < text.length) {
      // `\boxed 5`: the token up to whitespace, `$` or end of text
      const token = /^[^\s$]+/.exec(text.slice(i));
      if (token) {
        const content = token[0].replace(/[.,;]+$/, "");
        hits.push({ start: m.index, end: i + content.length, content, braced: false });
        from = i + content.length;
      }
    }
  }
  return hits;
}

/** The last balanced `\boxed{…}` or `\fbox{…}` (brace form only), or undefined. */
export function lastBoxedSpan(text: string): BoxedSpan | undefined {
  const braced = findBoxes(text).filter((h) => h.braced);
  const last = braced[braced.length - 1];
  return last && { start: last.start, end: last.end, content: last.content };
}

/**
 * The content (untrimmed) when the whole text is one braced box `\boxed{…}` / `\fbox{…}`, else undefined.
 * Brace form only: `\boxed 5` is not unwrapped here (extractAnswer's own unwrapping takes it).
 */
export function wholeBoxContent(text: string): string | undefined {
  const m = LEADING_BOX.exec(text);
  return m && closingBrace(text, m[0].length - 1) === text.length - 1 ? text.slice(m[0].length, -1) : undefined;
}

/** What may follow the final box and still count as final: whitespace and closing punctuation ($ . \] \) } ** ). */
const CLOSING_TAIL = /^[\s$.\\\])}*]*$/;

/**
 * The text ends in a final answer: its last balanced box has non-empty content (whitespace only
 * counts as empty), some non-whitespace text (the reasoning) before it, and only whitespace and
 * closing punctuation (`$`, `.`, `\]`, `\)`, `}`, `*`) after it. The format check shared by
 * Octopus' format reward and Trust-GRPO's outcome reward.
 */
export function endsInFinalBox(text: string): boolean {
  const box = lastBoxedSpan(text);
  return box !== undefined && box.content.trim() !== "" && text.slice(0, box.start).trim() !== "" && CLOSING_TAIL.test(text.slice(box.end));
}

const FINAL_ANSWER = /final answer\s*(?:is|:)\s*:?\s*/gi;

/** The answer after the last "final answer is" / "final answer:": a `$…$` span, else the rest of the sentence. */
function finalAnswerPhrase(text: string): string | undefined {
  let after: number | undefined;
  FINAL_ANSWER.lastIndex = 0;
  for (let m = FINAL_ANSWER.exec(text); m !== null; m = FINAL_ANSWER.exec(text)) {
    after = m.index + m[0].length;
    FINAL_ANSWER.lastIndex = m.index + 1; // overlapping: "Final Answer: The final answer is $x$"
  }
  if (after === undefined) return undefined;
  const rest = text.slice(after);
  const math = /^\$\$?([^$]+)\$/.exec(rest) ?? /^\\[(\[]([\s\S]*?)\\[)\]]/.exec(rest);
  if (math) return math[1];
  return rest.split("\n")[0].split(/\.\s/)[0];
}

/** Thousands-separated numbers first, then fractions a/b, then plain decimals; a `-` counts as a sign only after a non-word. */
const NUMBER =
  /(?<![\w.)\]}])-?(?:\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?\s*\/\s*\d+(?:\.\d+)?|\d+\.\d+|\.\d+|\d+)/g;

function cleanPhrase(answer: string): string {
  let s = answer.trim();
  // strip trailing sentence punctuation and math delimiters: "$42$." -> "42"
  for (let prev = ""; prev !== s; ) {
    prev = s;
    s = s.replace(/[.\s]+$/, "").replace(/^\$+|\$+$/g, "").replace(/^\\\(|\\\)$/g, "").replace(/^\\\[|\\\]$/g, "").trim();
    s = s.replace(/^\*\*|\*\*$/g, "").trim(); // markdown bold around the answer
  }
  return s;
}

/**
 * The final answer of a model response, or undefined when there is none.
 * An empty last box (`\boxed{}`) is an explicit empty answer: undefined, with no fallback.
 */
export function extractAnswer(text: string): string | undefined {
  if (typeof text !== "string" || text.length === 0) return undefined;
  const boxes = findBoxes(text);
  if (boxes.length > 0) {
    let content = boxes[boxes.length - 1].content.trim();
    // \boxed{\boxed{5}} -> 5; findBoxes, not wholeBoxContent: an inner brace-less `\boxed 5` unwraps too
    for (let inner = findBoxes(content); inner.length === 1 && inner[0].start === 0 && inner[0].end === content.length; inner = findBoxes(content)) {
      content = inner[0].content.trim();
    }
    return content.length > 0 ? content : undefined;
  }
  const phrase = finalAnswerPhrase(text);
  if (phrase !== undefined) {
    const cleaned = cleanPhrase(phrase);
    if (cleaned.length > 0) return cleaned;
  }
  let last: string | undefined;
  NUMBER.lastIndex = 0;
  for (let m = NUMBER.exec(text); m !== null; m = NUMBER.exec(text)) last = m[0];
  return last?.replace(/\s+/g, "");
}

/** The gold answer of a GSM8K item: the text after the last `####`, trimmed (e.g. "1,450,000"). */
export function gsm8kGold(answer: string): string {
  const at = answer.lastIndexOf("####");
  if (at < 0) throw new Error(`GSM8K answer has no "#### <number>" line: ${JSON.stringify(answer.slice(-80))}`);
  const gold = answer.slice(at + 4).trim();
  if (gold.length === 0) throw new Error(`GSM8K answer has an empty "####" line: ${JSON.stringify(answer.slice(-80))}`);
  return gold;
}
