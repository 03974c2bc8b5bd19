/**
 * Final-answer extraction (docs/methods.md §7; §6.1 for the box conventions).
 *
 * Order of preference:
 *   1. the content of the last balanced `\boxed{…}` / `\fbox{…}` (or the brace-less `\boxed 5`), with
 *      the boxes just before it when only a separator stands between (`\boxed{-2}, \boxed{1}` → `-2, 1`);
 *   2. "The final answer is X" / "final answer: X";
 *   3. the last display or inline math (`\[…\]`, `$$…$$`, `\(…\)`, `$…$`) of the final sentence, with the
 *      spans just before it joined the same way (`$x=-2$ or $x=1$`);
 *   4. the last number in the text (sign, decimals, thousands separators, fractions like 3/4).
 * Nothing here throws on broken input: an unbalanced box is skipped, not an error. Every function
 * is linear in the length of the text (the grader's time budget starts with extraction).
 */

/** Where extractFinalAnswer found the answer, in its order of preference. */
export type AnswerSource = "box" | "final answer phrase" | "final math" | "last number";

/** Where a balanced `\boxed{…}` / `\fbox{…}` sits in a text. */
export interface BoxedSpan {
  /** index of the backslash of `\boxed` / `\fbox` */
  start: number;
  /** index just past the closing brace: `text.slice(0, end)` keeps the box and drops what follows */
  end: number;
  /** the text between the outer braces, untrimmed */
  content: string;
}

// ---------------------------------------------------------------------------------------------
// The box scanner. Every function below is linear in the text: one pass finds the box commands
// and the braces that close them, and the later steps walk that list forward. (The earlier
// unwrapping of `\boxed{\boxed{…}}` re-scanned the content once per level: quadratic, 75 s for
// 40k levels.)

/** A text that starts with a box command, after any whitespace. */
const LEADING_BOX_COMMAND = /^\s*\\(?:boxed|fbox)(?![a-zA-Z])/;
/** A box command at a given index, `\boxed` or `\fbox` (`\boxedfoo` is another command), with the whitespace after it. */
const BOX_COMMAND_AT = /\\(?:boxed|fbox)(?![a-zA-Z])\s*/y;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** One `\boxed` / `\fbox` command of a text. */
interface BoxCommand {
  /** index of its backslash */
  start: number;
  /** index of its argument after any whitespace: the `{` of the braced form, else the first character of the brace-less token */
  argument: number;
  /** index of the `}` that closes a braced argument; -1 when it never closes, or for the brace-less form */
  close: number;
}

/** Index of the argument of a box command that starts at `i`, or -1 when none does. */
function boxArgumentAt(text: string, i: number): number {
  BOX_COMMAND_AT.lastIndex = i;
  return BOX_COMMAND_AT.test(text) ? BOX_COMMAND_AT.lastIndex : -1;
}

/**
 * Every box command of `text`, left to right, with the brace closing its argument. One pass with a
 * stack of open groups; escaped braces `\{` `\}` are literal characters in LaTeX and do not group.
 * `\\boxed{…}` counts as a box too (a model's over-escaped `\boxed`).
 */
function scanBoxCommands(text: string): BoxCommand[] {
  const commands: BoxCommand[] = [];
  let depth = 0; // open groups
  /** the open box groups, innermost last: [index into `commands`, depth of the group] */
  const openBoxes: [number, number][] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) {
      let argument = boxArgumentAt(text, i);
      if (argument < 0 && text.charCodeAt(i + 1) === BACKSLASH) {
        argument = boxArgumentAt(text, i + 1); // `\\boxed`
        if (argument >= 0) i++;
      }
      if (argument >= 0) {
        commands.push({ start: i, argument, close: -1 });
        if (text.charCodeAt(argument) === OPEN_BRACE) {
          openBoxes.push([commands.length - 1, ++depth]);
          i = argument;
        } else i = argument - 1; // the brace-less token is scanned like any text
      } else i++; // the escaped character
    } else if (c === OPEN_BRACE) depth++;
    else if (c === CLOSE_BRACE && depth > 0) {
      const innermost = openBoxes[openBoxes.length - 1];
      if (innermost?.[1] === depth) commands[openBoxes.pop()![0]].close = i;
      depth--;
    }
  }
  return commands;
}

/** A box found in a text: `[contentStart, contentEnd)` is its content, untrimmed. */
interface BoxHit {
  /** index of its command in scanBoxCommands' list */
  command: number;
  start: number;
  end: number;
  contentStart: number;
  contentEnd: number;
  braced: boolean;
}

/** Ends a brace-less box's token: whitespace or `$`. */
const TOKEN_END = /[\s$]/g;

/** Index of the first whitespace or `$` at or after `from`, else `text.length`. */
function tokenEnd(text: string, from: number): number {
  TOKEN_END.lastIndex = from;
  return TOKEN_END.exec(text)?.index ?? text.length;
}

/** `end` moved back over trailing `.`, `,` and `;` (sentence punctuation after `\boxed 5`), not before `from`. */
function beforeTrailingPunctuation(text: string, from: number, end: number): number {
  while (end > from && ".,;".includes(text[end - 1])) end--;
  return end;
}

/**
 * The boxes of `text` that are not inside another box, left to right: a box nested in a box is
 * part of the outer content. A box whose brace never closes is skipped. `\boxed 5` (no braces)
 * takes the token up to whitespace or `$`, without trailing punctuation.
 */
function topLevelBoxes(text: string, commands: readonly BoxCommand[]): BoxHit[] {
  const hits: BoxHit[] = [];
  let from = 0;
  for (const [command, { start, argument, close }] of commands.entries()) {
    if (start < from) continue; // inside the previous box
    if (text.charCodeAt(argument) === OPEN_BRACE) {
      if (close < 0) continue; // unbalanced: not an answer
      hits.push({ command, start, end: close + 1, contentStart: argument + 1, contentEnd: close, braced: true });
      from = close + 1;
    } else if (argument < text.length) {
      const end = tokenEnd(text, argument);
      if (end === argument) continue; // `\boxed $`: no token
      const contentEnd = beforeTrailingPunctuation(text, argument, end);
      hits.push({ command, start, end: contentEnd, contentStart: argument, contentEnd, braced: false });
      from = contentEnd;
    }
  }
  return hits;
}

/**
 * `[from, to)` trimmed and, while a single box fills all of it, replaced by that box's content
 * (trimmed): `\boxed{ \boxed{5} }` → `5`. `braceless` also unwraps a brace-less box that fills it
 * (`\boxed{\boxed 5}` → `5`). Linear: both ends only move inwards, and `commands` is walked once from
 * `firstCommand`, a command at or before `from` (the box's own, so that unwrapping every box of a
 * text walks each command once).
 */
function unwrapBoxes(text: string, commands: readonly BoxCommand[], from: number, to: number, braceless: boolean, firstCommand = 0): [number, number] {
  let lo = from;
  let hi = to;
  let next = firstCommand; // the first command that starts at or after lo
  let breakAt = -1; // tokenEnd(text, x) for the last x asked: tokens seen so far have no break before it
  for (;;) {
    while (lo < hi && /\s/.test(text[lo])) lo++;
    while (hi > lo && /\s/.test(text[hi - 1])) hi--;
    while (next < commands.length && commands[next].start < lo) next++;
    const command = commands[next];
    if (command === undefined || command.start !== lo || command.argument >= hi) return [lo, hi];
    if (text.charCodeAt(command.argument) === OPEN_BRACE) {
      if (command.close !== hi - 1) return [lo, hi];
      lo = command.argument + 1;
      hi = command.close;
    } else {
      if (!braceless) return [lo, hi];
      if (breakAt < command.argument) breakAt = tokenEnd(text, command.argument);
      if (Math.min(breakAt, hi) !== hi || beforeTrailingPunctuation(text, command.argument, hi) !== hi) return [lo, hi];
      lo = command.argument;
    }
  }
}

/** How many box commands the text holds, balanced or not. */
export function boxCommandCount(text: string): number {
  return scanBoxCommands(text).length;
}

/** The text holds a box command, balanced or not. */
export function hasBoxCommand(text: string): boolean {
  return boxCommandCount(text) > 0;
}

/**
 * Index of the `}` matching the `{` at `open`, or -1 when it never closes (escaped `\{` `\}` do not
 * group). `open` must hold a `{` that is not itself escaped (not after an odd run of backslashes).
 */
export function closingBrace(text: string, open: number): number {
  // a forward scan from `open`: the verifier calls this once per macro argument of a short answer
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++; // the same escapes as scanBoxCommands
      continue;
    }
    if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return i;
  }
  return -1;
}

/** The last balanced `\boxed{…}` or `\fbox{…}` (brace form only), or undefined. */
export function lastBoxedSpan(text: string): BoxedSpan | undefined {
  const braced = topLevelBoxes(text, scanBoxCommands(text)).filter((h) => h.braced);
  const last = braced[braced.length - 1];
  return last && { start: last.start, end: last.end, content: text.slice(last.contentStart, last.contentEnd) };
}

/**
 * The text trimmed and, while it is one braced box `\boxed{…}` / `\fbox{…}`, that box's content,
 * trimmed: `\boxed{\boxed{ 5 }}` → `5`. Brace form only (extractAnswer also unwraps `\boxed 5`).
 */
export function withoutWrappingBoxes(text: string): string {
  if (!LEADING_BOX_COMMAND.test(text)) return text.trim(); // the common case, without a scan (the verifier asks often)
  const [lo, hi] = unwrapBoxes(text, scanBoxCommands(text), 0, text.length, false);
  return text.slice(lo, hi);
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

/**
 * Thousands-separated numbers first, then fractions a/b, then plain decimals; a `-` counts as a sign
 * only after a non-word. At most 20 thousands groups (a 61-digit number): each try of that
 * alternative then reads a bounded stretch, where an unbounded `(?:,\d{3})+` re-read the rest of a
 * long run of groups from every comma (quadratic: 160 KB of ",234" took 7 s).
 */
const NUMBER =
  /(?<![\w.)\]}])-?(?:\d{1,3}(?:,\d{3}){1,20}(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?\s*\/\s*\d+(?:\.\d+)?|\d+\.\d+|\.\d+|\d+)/g;

/**
 * The phrase without the sentence punctuation, math delimiters (`$`, `\(…\)`, `\[…\]`) and markdown
 * bold around it, layer by layer: "**$42$.**" → "42". Linear: both ends only move inwards (trailing
 * regexes like `[.\s]+$` backtrack quadratically on a long run of dots that does not end the text).
 */
function cleanPhrase(answer: string): string {
  let lo = 0;
  let hi = answer.length;
  const trim = () => {
    while (lo < hi && /\s/.test(answer[lo])) lo++;
    while (hi > lo && /\s/.test(answer[hi - 1])) hi--;
  };
  const stripPair = (open: string, close: string) => {
    if (answer.startsWith(open, lo) && hi - lo >= open.length) lo += open.length;
    if (hi - lo >= close.length && answer.startsWith(close, hi - close.length)) hi -= close.length;
  };
  trim();
  for (let before = -1; before !== hi - lo; ) {
    before = hi - lo;
    while (hi > lo && /[.\s]/.test(answer[hi - 1])) hi--;
    while (lo < hi && answer[lo] === "$") lo++;
    while (hi > lo && answer[hi - 1] === "$") hi--;
    stripPair("\\(", "\\)");
    stripPair("\\[", "\\]");
    trim();
    stripPair("**", "**");
    trim();
  }
  return answer.slice(lo, hi);
}

/**
 * What stands between two parts of one final answer: whitespace, `$`, `,` `;`, `and` / `or` (bare or
 * in `\text{}`), `\quad`. Only short gaps are tried, so a response of many boxes stays linear.
 */
const ANSWER_SEPARATOR = /^[\s$,;]*(?:(?:and|or|\\text\s*\{\s*(?:and|or|,)\s*\}|\\q?quad)[\s$,;]*)*$/;
const MAX_SEPARATOR_CHARS = 40;

/** Index of the first of the final answer's parts: the last of `spans` and those before it that only a separator divides from the next. */
function firstAdjacentPart(text: string, spans: readonly { start: number; end: number }[]): number {
  let first = spans.length - 1;
  while (first > 0) {
    const gap = text.slice(spans[first - 1].end, spans[first].start);
    if (gap.length > MAX_SEPARATOR_CHARS || !ANSWER_SEPARATOR.test(gap) || !/[,;a-z]|quad/.test(gap)) break;
    first--;
  }
  return first;
}

/** A math span of a text: `[contentStart, contentEnd)` between its delimiters. */
interface MathSpan {
  start: number;
  end: number;
  contentStart: number;
  contentEnd: number;
}

/**
 * The math spans of `text`, left to right: `$$…$$`, `\[…\]`, `\(…\)` and `$…$` (an escaped `\$` is a
 * dollar sign). Linear: each span is found by one forward search, and a delimiter that never closes
 * ends the scan for its kind.
 */
function mathSpans(text: string): MathSpan[] {
  const spans: MathSpan[] = [];
  const unclosed = new Set<string>();
  for (let i = 0; i < text.length; i++) {
    let open: string;
    let close: string;
    if (text[i] === "\\") {
      const next = text[i + 1];
      if (next === "[" || next === "(") [open, close] = [`\\${next}`, next === "[" ? "\\]" : "\\)"];
      else {
        i++; // an escaped character, `\$` among them
        continue;
      }
    } else if (text[i] === "$") [open, close] = text[i + 1] === "$" ? ["$$", "$$"] : ["$", "$"];
    else continue;
    if (unclosed.has(open)) continue;
    const end = text.indexOf(close, i + open.length);
    if (end < 0) {
      unclosed.add(open);
      continue;
    }
    spans.push({ start: i, end: end + close.length, contentStart: i + open.length, contentEnd: end });
    i = end + close.length - 1;
  }
  return spans;
}

/** After the last math span, at most a short end of the same sentence without digits: "$9$ is the answer." */
const FINAL_SENTENCE_TAIL = /^[^\d\n]{0,80}$/;

/** The last math of the final sentence (with the spans joined to it), or undefined. */
function finalMath(text: string): string | undefined {
  const spans = mathSpans(text);
  const last = spans[spans.length - 1];
  if (last === undefined) return undefined;
  const tail = text.slice(last.end);
  if (!FINAL_SENTENCE_TAIL.test(tail) || /[.!?]\s+\S/.test(tail)) return undefined;
  const answer = spans
    .slice(firstAdjacentPart(text, spans))
    .map((span) => cleanPhrase(text.slice(span.contentStart, span.contentEnd)))
    .filter((part) => part !== "")
    .join(", ");
  return answer === "" ? undefined : answer;
}

/**
 * The final answer of a model response and where it was found (see the module comment), or
 * undefined when there is none. An empty last box (`\boxed{}`) is an explicit empty answer:
 * undefined, with no fallback.
 */
export function extractFinalAnswer(text: string): { answer: string; from: AnswerSource } | undefined {
  if (typeof text !== "string" || text.length === 0) return undefined;
  const commands = scanBoxCommands(text);
  const boxes = topLevelBoxes(text, commands);
  if (boxes.length > 0) {
    // \boxed{\boxed{5}} -> 5, and an inner brace-less `\boxed 5` unwraps too
    const parts = boxes.slice(firstAdjacentPart(text, boxes)).map((box) => {
      const [lo, hi] = unwrapBoxes(text, commands, box.contentStart, box.contentEnd, true, box.command);
      return text.slice(lo, hi);
    });
    if (parts[parts.length - 1] === "") return undefined;
    return { answer: parts.filter((part) => part !== "").join(", "), from: "box" };
  }
  const phrase = finalAnswerPhrase(text);
  if (phrase !== undefined) {
    const cleaned = cleanPhrase(phrase);
    if (cleaned.length > 0) return { answer: cleaned, from: "final answer phrase" };
  }
  const math = finalMath(text);
  if (math !== undefined) return { answer: math, from: "final math" };
  let last: string | undefined;
  NUMBER.lastIndex = 0;
  for (let m = NUMBER.exec(text); m !== null; m = NUMBER.exec(text)) last = m[0];
  return last === undefined ? undefined : { answer: last.replace(/\s+/g, ""), from: "last number" };
}

/** The final answer of a model response (extractFinalAnswer), or undefined when there is none. */
export function extractAnswer(text: string): string | undefined {
  return extractFinalAnswer(text)?.answer;
}

/** The gold answer of a GSM8K item: the text after the last `####`, trimmed (e.g. "1,450,000"). */
export function gsm8kGold(answer: string): string {
  const at = answer.lastIndexOf("####");
  if (at < 0) throw new Error(`GSM8K answer has no "#### <number>" line: ${JSON.stringify(answer.slice(-80))}`);
  const gold = answer.slice(at + 4).trim();
  if (gold.length === 0) throw new Error(`GSM8K answer has an empty "####" line: ${JSON.stringify(answer.slice(-80))}`);
  return gold;
}
