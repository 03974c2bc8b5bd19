/**
 * LaTeX scanning shared by the verifier's stages (docs/methods.md §7): macro arguments, grouping
 * tokens, splitting at top-level separators. Every function is linear in its input, and the
 * verifier only calls them on answers of at most MAX_ANSWER_CHARS.
 */
import { closingBrace } from "./extract";

/** A LaTeX macro argument at `i` (after spaces): a `{group}`, a `\command` or one character. */
export function readArgument(s: string, i: number): { text: string; end: number } | undefined {
  while (i < s.length && s[i] === " ") i++;
  if (i >= s.length) return undefined;
  if (s[i] === "{") {
    const close = closingBrace(s, i);
    return close < 0 ? undefined : { text: s.slice(i + 1, close), end: close + 1 };
  }
  if (s[i] === "\\") {
    const m = /^\\(?:[a-zA-Z]+|.)/.exec(s.slice(i));
    return m ? { text: m[0], end: i + m[0].length } : undefined;
  }
  if (s[i] === "}") return undefined;
  return { text: s[i], end: i + 1 };
}

interface Token {
  text: string;
  start: number;
  /** +1 opens a group, -1 closes one, 0 otherwise */
  delta: number;
}

const OPENERS = new Set(["{", "(", "[", "\\{"]);
const CLOSERS = new Set(["}", ")", "]", "\\}"]);

/** Tokens with grouping: `{ ( [ \{` open and `} ) ] \}` close (brackets may mix: `(1,2]`). */
function* tokens(s: string): Generator<Token> {
  for (let i = 0; i < s.length; ) {
    let text: string;
    if (s[i] === "\\") text = /^\\(?:[a-zA-Z]+|\\|.?)/.exec(s.slice(i, i + 40))![0];
    else text = s[i];
    const delta = OPENERS.has(text) ? 1 : CLOSERS.has(text) ? -1 : 0;
    yield { text, start: i, delta };
    i += text.length;
  }
}

/** The deepest grouping level in `s`. */
export function nestingDepth(s: string): number {
  let depth = 0;
  let deepest = 0;
  for (const t of tokens(s)) {
    depth = Math.max(0, depth + t.delta);
    deepest = Math.max(deepest, depth);
  }
  return deepest;
}

/** Split at top-level (depth 0) occurrences of the given tokens (",", "\\cup", "&", "\\\\", "=", "\\pm", "<", "\\le", …). */
export function splitTopLevel(s: string, separators: readonly string[]): string[] {
  return splitTopLevelKeeping(s, separators).parts;
}

/** splitTopLevel, also giving the separator found between each pair of parts. */
export function splitTopLevelKeeping(s: string, separators: readonly string[]): { parts: string[]; separators: string[] } {
  const parts: string[] = [];
  const found: string[] = [];
  let depth = 0;
  let from = 0;
  for (const t of tokens(s)) {
    depth += t.delta;
    if (depth === 0 && t.delta === 0 && separators.includes(t.text)) {
      parts.push(s.slice(from, t.start));
      found.push(t.text);
      from = t.start + t.text.length;
    }
  }
  parts.push(s.slice(from));
  return { parts: parts.map((p) => p.trim()), separators: found };
}

/** Where the group opened at index 0 closes (the closing token's span), or undefined when it does not. */
export function closingDelimiter(s: string): { start: number; end: number } | undefined {
  let depth = 0;
  for (const t of tokens(s)) {
    depth += t.delta;
    if (depth === 0) return t.delta === -1 ? { start: t.start, end: t.start + t.text.length } : undefined;
  }
  return undefined;
}
