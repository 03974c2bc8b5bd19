/**
 * Octopus: correction-specific rollouts (docs/methods.md §6.1), as pure functions over texts,
 * correctness flags, token ids and masks — parsing, the format and correction rewards,
 * the rollout augmentation (pairing), tokenisation with exact span boundaries, and the
 * Stage I / Stage II loss and KL masks.
 *
 * A response is `o1 ⊕ SEP ⊕ o2`: a first answer, the plain-text marker SEP, and a
 * re-solve from scratch; o1 and o2 each end in a final `\boxed{…}` answer.
 * Correctness is an input (booleans, or an injected `isCorrect(text)`), so this module
 * knows nothing of the answer verifier (docs/methods.md §7).
 */

import { boxCommandCount, endsInFinalBox, lastBoxedSpan } from "../../grading/extract";
import { seededRandom, shuffleInPlace } from "../../util/random";

/** The default marker between the first answer and the correction (docs/methods.md §6.1). */
export const DEFAULT_SEPARATOR = "\n\n<self-correction>\n</self-correction>\n\n";

// ---------------------------------------------------------------------------------------
// \boxed{} scanning: the verifier's scanner (lib/grading/extract.ts), so the box that cuts
// o1/o2 is exactly the box whose answer gets graded.
// ---------------------------------------------------------------------------------------

/** True when the text's last balanced box has non-whitespace content. */
function hasNonEmptyBox(text: string): boolean {
  const box = lastBoxedSpan(text);
  return box !== undefined && box.content.trim() !== "";
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

export interface ParsedCorrection {
  /** The response holds the marker at least once. */
  hasMarker: boolean;
  /** How many times the marker occurs (non-overlapping). */
  markerCount: number;
  /** Character index of the first marker, −1 without one. */
  markerIndex: number;
  /** The raw text before the first marker (the whole response without a marker). */
  o1Segment: string;
  /** The raw text between the first marker's end and the second marker (or the end). */
  o2Segment?: string;
  /** o1Segment cut right after its last balanced `\boxed{}` (uncut when it has none). */
  o1: string;
  /** o2Segment cut the same way; undefined without a marker. */
  o2?: string;
  /** o1's last balanced box has non-empty content. */
  o1HasBox: boolean;
  /** The response has a marker and o2's last balanced box has non-empty content. */
  o2HasBox: boolean;
  /** Content of o1's last balanced box (possibly empty), if it has one. */
  o1Box?: string;
  /** Content of o2's last balanced box (possibly empty), if it has one. */
  o2Box?: string;
  /** f(o1): formatReward of the raw o1 segment. */
  formatO1: number;
  /** f(o2): formatReward of the raw o2 segment, 0 when the response has 2+ markers; undefined without a marker. */
  formatO2?: number;
}

/**
 * Splits a response into o1 and o2 (docs/methods.md §6.1 "Parsing").
 *
 * The rule as first written said both "o2 = text after the last marker's end" and
 * "anything after a second marker is dropped"; with two or more markers these conflict (the
 * text after the last marker IS after a second marker). Reading used here, consistent for
 * any marker count: the response is first truncated at its second marker (the second
 * marker and everything after it are dropped), and in what remains the first marker is also
 * the last one. So o1 = text before the first marker, o2 = text between the first marker's
 * end and the second marker (or the end of the response), each cut right after its last
 * balanced `\boxed{}`. Examples: `A SEP B` → (A, B); `A SEP B SEP C` → (A, B);
 * `A SEP B SEP C SEP D` → (A, B). A response with 2+ markers is off the `o1 ⊕ SEP ⊕ o2`
 * format, so its formatO2 is 0 (the "o2 failing format" cap applies).
 *
 * Without a marker the response is a plain answer: o1 is the answer, cut after its
 * last box, and there is no o2.
 */
export function parseCorrectionResponse(text: string, separator: string = DEFAULT_SEPARATOR): ParsedCorrection {
  if (separator === "") throw new RangeError("the self-correction separator must not be empty (octopus.separator)");
  const markerIndex = text.indexOf(separator);
  if (markerIndex < 0) {
    const o1 = cutAfterLastBox(text);
    return {
      hasMarker: false,
      markerCount: 0,
      markerIndex,
      o1Segment: text,
      o1: o1.text,
      o1HasBox: o1.hasBox,
      o2HasBox: false,
      o1Box: o1.box,
      formatO1: formatReward(text, separator),
    };
  }
  const o1Segment = text.slice(0, markerIndex);
  const o2Start = markerIndex + separator.length;
  const secondMarker = text.indexOf(separator, o2Start);
  const o2Segment = text.slice(o2Start, secondMarker < 0 ? text.length : secondMarker);
  const o1 = cutAfterLastBox(o1Segment);
  const o2 = cutAfterLastBox(o2Segment);
  return {
    hasMarker: true,
    markerCount: text.split(separator).length - 1,
    markerIndex,
    o1Segment,
    o2Segment,
    o1: o1.text,
    o2: o2.text,
    o1HasBox: o1.hasBox,
    o2HasBox: o2.hasBox,
    o1Box: o1.box,
    o2Box: o2.box,
    formatO1: formatReward(o1Segment, separator),
    formatO2: secondMarker < 0 ? formatReward(o2Segment, separator) : 0,
  };
}

function cutAfterLastBox(segment: string): { text: string; box?: string; hasBox: boolean } {
  const box = lastBoxedSpan(segment);
  if (box === undefined) return { text: segment, hasBox: false };
  return { text: segment.slice(0, box.end), box: box.content, hasBox: box.content.trim() !== "" };
}

// ---------------------------------------------------------------------------------------
// Rewards
// ---------------------------------------------------------------------------------------

/**
 * The format reward f(part) of docs/methods.md §6.1, 1 or 0. A part (o1 or o2, raw, before cutting)
 * is well formed when it holds reasoning then one final answer:
 *  - exactly one `\boxed` (or `\fbox`) command, and it is balanced;
 *  - its content is not empty (whitespace only counts as empty);
 *  - some non-whitespace text (the reasoning) comes before it;
 *  - only whitespace and closing punctuation (`$`, `.`, `\]`, `\)`, `}`, `*`) after it;
 *  - the part does not contain the separator.
 */
export function formatReward(part: string, separator: string = DEFAULT_SEPARATOR): number {
  if (separator !== "" && part.includes(separator)) return 0;
  if (boxCommandCount(part) !== 1) return 0;
  return endsInFinalBox(part) ? 1 : 0;
}

export interface CorrectionRewardInput {
  hasMarker: boolean;
  /** The (cut) first answer; without a marker, the plain answer. */
  o1: string;
  /** The (cut) correction; required with a marker. */
  o2?: string;
  o1Correct: boolean;
  /** Required with a marker. */
  o2Correct?: boolean;
  /** f(o1) */
  formatO1: number;
  /** f(o2); with a marker, a missing value fails the format. */
  formatO2?: number;
  /** Without a marker: the plain answer's accuracy in [0, 1] (default: o1Correct ? 1 : 0). */
  acc?: number;
}

/** r' of docs/methods.md §6.1 by (o1 correct, o2 correct). */
const CORRECTION_REWARD = { w2c: 1.0, c2c: 0.75, w2w: 0, c2w: -0.25 } as const;

/**
 * The self-correction reward r_sc (docs/methods.md §6.1).
 *
 * With a marker: r' = 1.0 (w→c), 0.75 (c→c), 0 (w→w), −0.25 (c→w);
 * f = min(f(o1), f(o2)); r = 0.9·r' + 0.1·f; then the caps
 *   o1 textually equal to o2 (after trimming and collapsing whitespace) → min(r, 0.5),
 *   o1 without a non-empty `\boxed{}`                                   → min(r, 0),
 *   o2 failing format (f(o2) < 1)                                        → min(r, 0.5).
 * Without a marker: r = 0.9·(acc − 0.5) + 0.1·f(o1); the caps belong to the two-attempt
 * reward and do not apply (a plain answer's format enters through f).
 */
export function correctionReward(input: CorrectionRewardInput): number {
  if (!input.hasMarker) {
    const acc = input.acc ?? (input.o1Correct ? 1 : 0);
    return 0.9 * (acc - 0.5) + 0.1 * input.formatO1;
  }
  if (input.o2 === undefined || input.o2Correct === undefined) {
    throw new RangeError("correctionReward: a response with a marker needs o2 and o2Correct");
  }
  const formatO2 = input.formatO2 ?? 0;
  const bucket = correctionBucket(input.o1Correct, input.o2Correct);
  let reward = 0.9 * CORRECTION_REWARD[bucket] + 0.1 * Math.min(input.formatO1, formatO2);
  if (collapseWhitespace(input.o1) === collapseWhitespace(input.o2)) reward = Math.min(reward, 0.5);
  if (!hasNonEmptyBox(input.o1)) reward = Math.min(reward, 0);
  if (formatO2 < 1) reward = Math.min(reward, 0.5);
  return reward;
}

function collapseWhitespace(text: string): string {
  return text.trim().replace(/\s+/g, " ");
}

export interface ScoredCorrection extends ParsedCorrection {
  /** The response as given. */
  text: string;
  o1Correct: boolean;
  /** Defined with a marker. */
  o2Correct?: boolean;
  reward: number;
  /** The original's final answer is correct: o2 with a marker, else o1 (see pairCorrectionRollouts). */
  finalCorrect: boolean;
}

/**
 * Parses a response, judges o1 and o2 with `isCorrect` (called on the cut parts), and
 * computes r_sc. The result is also a valid `CorrectionRollout` for pairing.
 */
export function scoreCorrectionResponse(
  text: string,
  isCorrect: (answer: string) => boolean,
  separator: string = DEFAULT_SEPARATOR,
): ScoredCorrection {
  const parsed = parseCorrectionResponse(text, separator);
  const o1Correct = isCorrect(parsed.o1);
  const o2Correct = parsed.o2 === undefined ? undefined : isCorrect(parsed.o2);
  const reward = correctionReward({ ...parsed, o1Correct, o2Correct });
  return { ...parsed, text, o1Correct, o2Correct, reward, finalCorrect: parsed.hasMarker ? o2Correct === true : o1Correct };
}

// ---------------------------------------------------------------------------------------
// Rollout augmentation (pairing)
// ---------------------------------------------------------------------------------------

/** A pair's correctness transition, o1 → o2: w = wrong, c = correct (w2c = wrong o1, correct o2). */
export type CorrectionBucket = "w2c" | "c2c" | "c2w" | "w2w";

export function correctionBucket(o1Correct: boolean, o2Correct: boolean): CorrectionBucket {
  if (o1Correct) return o2Correct ? "c2c" : "c2w";
  return o2Correct ? "w2c" : "w2w";
}

/** One of the n rollouts of a prompt, as pairing needs it (a ScoredCorrection fits). */
export interface CorrectionRollout {
  text: string;
  /** The cut first answer. */
  o1: string;
  /** The cut correction; undefined when the response has no marker. */
  o2?: string;
  o1Correct: boolean;
  /** Required when o2 is defined. */
  o2Correct?: boolean;
  o1HasBox: boolean;
  o2HasBox: boolean;
}

/** A member of an Octopus advantage group: an original, an augmented pair, or a copy of an original. */
export type CorrectionGroupSample =
  | { kind: "original"; rolloutIndex: number; text: string }
  | { kind: "copy"; rolloutIndex: number; text: string }
  | {
      kind: "pair";
      bucket: CorrectionBucket;
      /** o1 comes from rollout o1Index, o2 from rollout o2Index (always different rollouts). */
      o1Index: number;
      o2Index: number;
      o1: string;
      o2: string;
      o1Correct: boolean;
      o2Correct: boolean;
      /** `o1 + separator + o2`; EOS and max-length clipping are added at tokenisation. */
      text: string;
    };

export interface CorrectionGroup {
  /** The n originals in rollout order, then the n augmented samples: one advantage group of 2n. */
  samples: CorrectionGroupSample[];
  /** k: how many originals are correct (final answer: o2 with a marker, else o1). */
  correctOriginals: number;
  /** h = ⌊(n − k) / 2⌋ */
  half: number;
}

export interface PairingOptions {
  /** Rollouts per prompt (must equal rollouts.length; default rollouts.length). */
  n?: number;
  /** Seeds the order within each bucket and of the copies. */
  seed: number;
  separator?: string;
}

/**
 * The rollout augmentation of docs/methods.md §6.1: n more samples for a prompt's n rollouts, with
 * no extra generation.
 *
 * - o1 pool: rollouts whose o1 has a (non-empty) box; o2 pool: rollouts with a marker and
 *   a (non-empty) box after it.
 * - Pairs (o1^i, o2^j) for every i in the o1 pool and j in the o2 pool with i ≠ j: o1 only
 *   ever in the first slot, o2 only in the second. (i = j is left out: that pair is the
 *   original response itself, already in the group; repeating originals is the last
 *   resort of the order below.)
 * - Buckets by (o1Correct, o2Correct): w2c, c2c, c2w, w2w; each shuffled with the seeded
 *   PRNG (order within a bucket is random, the same for the same seed).
 * - k = correct originals. An original's final answer is o2 when it has a marker (an o2
 *   without a box is wrong), else o1 — the answer its reward r_sc is judged on, so k
 *   counts the originals with a positive-outcome reward. h = ⌊(n − k)/2⌋.
 * - Selection until n augmented samples: up to h w2c, then up to h c2c, then one c2w,
 *   then w2w, then the remaining c2w, then the remaining w2c, then the remaining c2c,
 *   then copies of originals (in a seeded random order, cycling if needed).
 */
export function pairCorrectionRollouts(rollouts: CorrectionRollout[], options: PairingOptions): CorrectionGroup {
  const n = options.n ?? rollouts.length;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`octopus pairing: n = ${n} must be a positive integer`);
  if (rollouts.length !== n) throw new RangeError(`octopus pairing: got ${rollouts.length} rollouts for n = ${n}`);
  rollouts.forEach((r, i) => {
    if (r.o2 !== undefined && r.o2Correct === undefined) throw new RangeError(`octopus pairing: rollout ${i} has o2 but no o2Correct`);
    if (r.o2 === undefined && r.o2HasBox) throw new RangeError(`octopus pairing: rollout ${i} has o2HasBox but no o2`);
  });
  const separator = options.separator ?? DEFAULT_SEPARATOR;

  const o1Pool = rollouts.flatMap((r, i) => (r.o1HasBox ? [i] : []));
  const o2Pool = rollouts.flatMap((r, i) => (r.o2 !== undefined && r.o2HasBox ? [i] : []));
  const buckets: Record<CorrectionBucket, Array<[number, number]>> = { w2c: [], c2c: [], c2w: [], w2w: [] };
  for (const i of o1Pool) {
    for (const j of o2Pool) {
      if (i !== j) buckets[correctionBucket(rollouts[i].o1Correct, rollouts[j].o2Correct === true)].push([i, j]);
    }
  }
  const random = seededRandom(options.seed);
  for (const name of ["w2c", "c2c", "c2w", "w2w"] as const) shuffleInPlace(buckets[name], random);

  const correctOriginals = rollouts.filter((r) => (r.o2 !== undefined ? r.o2Correct === true : r.o1Correct)).length;
  const half = Math.floor((n - correctOriginals) / 2);

  const augmented: CorrectionGroupSample[] = [];
  const used: Record<CorrectionBucket, number> = { w2c: 0, c2c: 0, c2w: 0, w2w: 0 };
  const take = (name: CorrectionBucket, count: number) => {
    for (let t = 0; t < count && used[name] < buckets[name].length && augmented.length < n; t++) {
      const [i, j] = buckets[name][used[name]++];
      const o1 = rollouts[i].o1;
      const o2 = rollouts[j].o2 as string;
      augmented.push({
        kind: "pair", bucket: name, o1Index: i, o2Index: j, o1, o2,
        o1Correct: rollouts[i].o1Correct, o2Correct: rollouts[j].o2Correct === true,
        text: o1 + separator + o2,
      });
    }
  };
  take("w2c", half);
  take("c2c", half);
  take("c2w", 1);
  take("w2w", Infinity);
  take("c2w", Infinity);
  take("w2c", Infinity);
  take("c2c", Infinity);
  const copyOrder = shuffleInPlace(Array.from({ length: n }, (_, i) => i), random);
  for (let t = 0; augmented.length < n; t++) {
    const i = copyOrder[t % n];
    augmented.push({ kind: "copy", rolloutIndex: i, text: rollouts[i].text });
  }

  const originals: CorrectionGroupSample[] = rollouts.map((r, i) => ({ kind: "original", rolloutIndex: i, text: r.text }));
  return { samples: [...originals, ...augmented], correctOriginals, half };
}

// ---------------------------------------------------------------------------------------
// Tokenisation and stage masks
// ---------------------------------------------------------------------------------------

/** What tokenisation needs of a tokenizer (lib/engine/tokenizer.ts TextTokenizer fits). */
export interface TokenEncoder {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Int32Array;
}

/**
 * Token spans of a response (response tokens only, no prompt), after clipping:
 * o1 = [0, o1End), separator = [o1End, separatorEnd), o2 = [separatorEnd, o2End),
 * EOS = [o2End, length). Without a marker the whole response is "o1" and
 * o1End = separatorEnd = o2End = the answer's end.
 */
export interface CorrectionSpans {
  hasMarker: boolean;
  o1End: number;
  separatorEnd: number;
  o2End: number;
  length: number;
}

export interface CorrectionTokens extends CorrectionSpans {
  /** [length] response token ids */
  ids: Int32Array;
  /** True when maxLength cut something off (possibly the EOS). */
  clipped: boolean;
}

/**
 * Tokenises `o1 ⊕ separator ⊕ o2 ⊕ EOS` (docs/methods.md §6.1) with each part encoded SEPARATELY
 * (no special tokens added) and concatenated, so the span boundaries are exact token
 * indices — joint encoding could merge tokens across a boundary. The result is clipped to
 * `maxLength` tokens (the EOS, appended when `eosId` is given, is clipped like any
 * token); the spans are clipped with it, so masks built from them stay aligned.
 *
 * `o2` undefined tokenises a plain answer (`o1 ⊕ EOS`). For an original response keep it
 * as generated by passing `text.slice(0, markerIndex)` and
 * `text.slice(markerIndex + separator.length)` from parseCorrectionResponse.
 */
export function tokenizeCorrection(
  tokenizer: TokenEncoder,
  o1: string,
  separator: string,
  o2: string | undefined,
  eosId: number | undefined,
  maxLength: number,
): CorrectionTokens {
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new RangeError(`maxLength ${maxLength} must be a positive integer`);
  const encode = (text: string) => (text === "" ? new Int32Array(0) : tokenizer.encode(text, { addSpecialTokens: false }));
  const o1Ids = encode(o1);
  const separatorIds = o2 === undefined ? new Int32Array(0) : encode(separator);
  const o2Ids = o2 === undefined ? new Int32Array(0) : encode(o2);
  const eosIds = eosId === undefined ? new Int32Array(0) : Int32Array.of(eosId);
  const full = new Int32Array(o1Ids.length + separatorIds.length + o2Ids.length + eosIds.length);
  full.set(o1Ids, 0);
  full.set(separatorIds, o1Ids.length);
  full.set(o2Ids, o1Ids.length + separatorIds.length);
  full.set(eosIds, full.length - eosIds.length);
  const length = Math.min(full.length, maxLength);
  const o1End = o1Ids.length;
  const separatorEnd = o1End + separatorIds.length;
  const o2End = separatorEnd + o2Ids.length;
  return {
    ids: full.slice(0, length),
    hasMarker: o2 !== undefined,
    o1End: Math.min(o1End, length),
    separatorEnd: Math.min(separatorEnd, length),
    o2End: Math.min(o2End, length),
    length,
    clipped: length < full.length,
  };
}

export type OctopusStage = 1 | 2;

export interface StageMasks {
  /** [length] 1 where a response token gets the policy loss */
  lossMask: Float32Array;
  /** [length] 1 where a response token gets the KL penalty */
  klMask: Float32Array;
}

/**
 * The per-token loss and KL masks of docs/methods.md §6.1 over the response tokens.
 *
 * Stage I (learn pure correction), response with a marker: m_loss = 0 on o1 and SEP
 * (o1 is a fixed context), 1 on o2 and EOS; m_kl = 1 on o1 only (the trainer applies
 * β = 0.01, k3, sequence-mean; all other KL is off).
 * Stage II (co-evolve), response with a marker: where correctness is consistent (c→c,
 * w→w) the whole response trains (m_loss = 1 on o1, SEP, o2, EOS); for w→c and c→w the
 * Stage I loss mask stays (o1 and SEP masked — SEP belongs to o1's context, so it is
 * unmasked exactly when o1 is); m_kl = 0 everywhere (o1-KL off).
 * Either stage, response without a marker: trains normally, m_loss = 1, m_kl = 0.
 *
 * Both masks are returned explicitly: a TrainSequence without klMask would take the loss
 * mask as its KL mask. They cover response tokens only; the caller prepends zeros for
 * the prompt (so entry 0 of the full sequence is 0, as the trainer requires).
 */
export function stageMasks(
  spans: CorrectionSpans,
  stage: OctopusStage,
  correctness: { o1Correct?: boolean; o2Correct?: boolean } = {},
): StageMasks {
  if (stage !== 1 && stage !== 2) throw new RangeError(`octopus stage ${String(stage)} must be 1 or 2`);
  const { length } = spans;
  if (!(spans.o1End <= spans.separatorEnd && spans.separatorEnd <= spans.o2End && spans.o2End <= length)) {
    throw new RangeError(`octopus spans out of order: ${JSON.stringify(spans)}`);
  }
  const lossMask = new Float32Array(length);
  const klMask = new Float32Array(length);
  if (!spans.hasMarker) {
    lossMask.fill(1);
    return { lossMask, klMask };
  }
  if (stage === 1) {
    lossMask.fill(1, spans.separatorEnd);
    klMask.fill(1, 0, spans.o1End);
    return { lossMask, klMask };
  }
  if (correctness.o1Correct === undefined || correctness.o2Correct === undefined) {
    throw new RangeError("octopus Stage II masks need o1Correct and o2Correct for a response with a marker");
  }
  const consistent = correctness.o1Correct === correctness.o2Correct;
  lossMask.fill(1, consistent ? 0 : spans.separatorEnd);
  return { lossMask, klMask };
}
