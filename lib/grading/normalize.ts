/**
 * Normalisation of an answer's LaTeX (docs/methods.md §7): the notational noise every kind of
 * answer drops before it is read (math delimiters, `\left`/`\right`, spacing commands, `\text{…}`
 * units, degrees, `\%`, `\dfrac`, brace-less fractions, relation operators written in ASCII), and the
 * string form the first stage compares.
 */
import { closingBrace, withoutWrappingBoxes } from "./extract";
import { readArgument } from "./latex";

const TEXT_COMMAND = /\\(?:text|textrm|textbf|textit|textnormal|textsf|texttt|mbox|mathrm)\s*\{/;

/** Unwrap `\text{…}`-like commands: the whole answer → its content; `and`/`or` → ","; unit words after a value → dropped. */
function handleTextCommands(s: string): string {
  for (let guard = 0; guard < 100; guard++) {
    const m = TEXT_COMMAND.exec(s);
    if (!m) return s;
    const open = m.index + m[0].length - 1;
    const close = closingBrace(s, open);
    if (close < 0) return s.slice(0, m.index) + s.slice(open + 1); // broken: drop the command, keep the rest
    const content = s.slice(open + 1, close);
    const before = s.slice(0, m.index);
    let after = s.slice(close + 1);
    let replacement: string;
    if (/^\s*(?:and|or|,)\s*$/i.test(content)) replacement = ",";
    else if (before.trim().length > 0 && /^[a-zA-Z\s.]*$/.test(content)) {
      replacement = " "; // a unit or a word after the value: "5\text{ cm}^2" -> "5"
      after = after.replace(/^\s*\^\s*\{?\s*[23]\s*\}?/, "");
    } else replacement = content;
    s = before + replacement + after;
  }
  return s;
}

/** `\frac 34` → `\frac{3}{4}`, `\frac\pi2` → `\frac{\pi}{2}` (nested ones too). */
function bracesForFractions(s: string): string {
  for (let at = s.indexOf("\\frac"); at >= 0; at = s.indexOf("\\frac", at + 5)) {
    if (/[a-zA-Z]/.test(s[at + 5] ?? "")) continue; // \fraction…
    const numerator = readArgument(s, at + 5);
    const denominator = numerator && readArgument(s, numerator.end);
    if (!numerator || !denominator) continue;
    s = `${s.slice(0, at)}\\frac{${numerator.text}}{${denominator.text}}${s.slice(denominator.end)}`;
  }
  return s;
}

/**
 * Relation operators in one spelling each: `≥ \geq \geqslant >=` → `\ge`, `≤ \leq \leqslant <=` → `\le`,
 * `≠ \neq` → `\ne` (not `!=`: `5!=120` is a factorial), `\gt \lt` → `> <`. A space follows each command so that `x>=y` does not become the
 * command `\gey`.
 */
function relationOperators(s: string): string {
  return s
    .replace(/>=|≥|\\geq(?:slant)?(?![a-zA-Z])|\\ge(?![a-zA-Z])/g, "\\ge ")
    .replace(/<=|≤|\\leq(?:slant)?(?![a-zA-Z])|\\le(?![a-zA-Z])/g, "\\le ")
    .replace(/≠|\\neq?(?![a-zA-Z])/g, "\\ne ")
    .replace(/\\gt(?![a-zA-Z])/g, ">")
    .replace(/\\lt(?![a-zA-Z])/g, "<")
    .replace(/≈/g, "\\approx ");
}

/**
 * LaTeX with the notational noise removed, spacing kept (the CAS needs `\cot x` to stay two tokens).
 * Used by every kind's reader and by the CAS.
 */
export function cleanLatex(input: string): string {
  let s = withoutWrappingBoxes(String(input)); // a boxed gold or prediction: its content
  s = s.replace(/\\\$/g, " ").replace(/\$/g, " "); // math delimiters and currency
  s = s.replace(/\\(?:left|right)\s*[.|](?=\s|$|\\)/g, (t) => (t.endsWith("|") ? "|" : ""));
  s = s.replace(/\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])/g, "");
  s = s.replace(/\\\\|\\[!,;:> ]/g, (t) => (t === "\\\\" ? t : " ")); // thin spaces, not row breaks
  s = s.replace(/~/g, " ").replace(/\\q?quad(?![a-zA-Z])/g, " ");
  s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle)(?![a-zA-Z])/g, "");
  s = s.replace(/\\[dtc]frac(?![a-zA-Z])/g, "\\frac");
  s = s.replace(/\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|°|\^?\s*\\degree(?![a-zA-Z])/g, "");
  s = s.replace(/\\?%/g, "");
  s = handleTextCommands(s);
  s = s.replace(/\\(?:mathbf|boldsymbol|bm)\s*\{([^{}]*)\}/g, "$1"); // bold is typography
  s = bracesForFractions(s);
  s = s.replace(/\\sqrt\s*(?![\s{[])(\\[a-zA-Z]+|[^\s{[\\])/g, "\\sqrt{$1}");
  s = s.replace(/\\(?:varnothing|emptyset)(?![a-zA-Z])/g, "\\{\\}");
  s = relationOperators(s);
  s = s.replace(/\s+/g, " ").trim();
  s = s.replace(/ (?:and|or) /g, ", "); // "x = -2 or x = 1": a list of solutions
  s = s.replace(/(?:\s*\.)+$/, "").trim(); // trailing full stop
  s = s.replace(/(^|[^\d.])\.(\d)/g, "$10.$2"); // .5 -> 0.5
  s = s.replace(/^[a-zA-Z]\s*\\in\s*/, ""); // x \in [-2,7] -> [-2,7]
  const choice = /^\(\s*([A-E])\s*\)$/.exec(s);
  if (choice) s = choice[1]; // (B) -> B
  return s;
}

/** The string-comparison form: cleanLatex without whitespace (one space kept between digits: `1 2000` is not `12000`), `^{2}` → `^2`. */
export function normalizeAnswer(input: string): string {
  return cleanLatex(input)
    .replace(/(\d)\s+(?=\d)/g, "$1 ")
    .replace(/(?<!\d)\s+|\s+(?!\d)/g, "")
    .replace(/([_^])\{([^{}\\])\}/g, "$1$2");
}

/** A word of 3+ letters that is not a LaTeX command: a text answer ("Evelyn", "east"), never sent to the CAS. */
export function isTextAnswer(clean: string): boolean {
  const withoutNames = clean.replace(/\\(?:begin|end|operatorname|mathrm|mathbf|mathbb|mathcal)\s*\{[^{}]*\}/g, " ");
  return /(?:^|[^\\a-zA-Z])[a-zA-Z]{3,}/.test(withoutNames);
}
