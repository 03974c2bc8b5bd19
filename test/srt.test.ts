// SRT (docs/methods.md §6.4) and the majority vote it labels with: labels equal the majority (checked
// against a brute-force count over random answer sets), only parseable answers vote, verifier
// equivalence merges "1/2" and "0.5", ties are broken independently of the voters' order, hard
// and soft rewards, the majority-share filter, label accuracy, the collapse alarm on crafted
// traces, early stopping, and Octopus + SRT's choice of voters.
import { majorityVote } from "../lib/grading/majority";
import { DEFAULT_SEPARATOR as SEP } from "../lib/methods/octopus/octopus";
import { octopusFinalAnswer } from "../lib/methods/srt/hook";
import {
  collapseAlarm,
  DEFAULT_COLLAPSE_ALARM,
  dominantLabelShare,
  earlyStopping,
  keepByMajorityShare,
  labelAccuracy,
  pseudoLabelRewards,
} from "../lib/methods/srt/srt";
import { mulberry32 } from "./helpers/random";

const exact = (a: string, b: string) => a === b;

describe("majorityVote", () => {
  test("the label is the most frequent parseable answer; unparseable answers do not vote but count as voters", () => {
    const v = majorityVote(["3", undefined, "5", "3", undefined, undefined, undefined, "3"], exact);
    expect(v).toMatchObject({ label: "3", votes: 3, share: 3 / 8, parseable: 4 });
    expect(v.clusterOf).toEqual([0, -1, 1, 0, -1, -1, -1, 0]);
    // unparseable answers outnumber every answer, yet never win
    expect(majorityVote([undefined, undefined, "", "7"], exact).label).toBe("7");
    expect(majorityVote([undefined, undefined], exact)).toMatchObject({ label: undefined, votes: 0, share: 0, parseable: 0 });
  });

  test("answers equivalent under the verifier form one cluster", () => {
    const v = majorityVote(["0.5", "\\frac{1}{2}", "2", "1/2", "2"]);
    expect(v.votes).toBe(3);
    expect(["0.5", "1/2", "\\frac{1}{2}"]).toContain(v.label);
    expect(v.clusters[1]).toEqual({ answer: "2", members: [2, 4] });
  });

  test("ties go to the smallest representative whatever the voters' order", () => {
    const answers = ["9", "4", "9", "4", "x"];
    const random = mulberry32(5);
    for (let trial = 0; trial < 20; trial++) {
      const shuffled = [...answers].sort(() => random() - 0.5);
      expect(majorityVote(shuffled, exact).label).toBe("4");
    }
  });

  test("300 random answer sets: the label has the brute-force maximum count", () => {
    const random = mulberry32(11);
    for (let trial = 0; trial < 300; trial++) {
      const answers = Array.from({ length: 1 + Math.floor(random() * 10) }, () => (random() < 0.2 ? undefined : String(Math.floor(random() * 4))));
      const counts = new Map<string, number>();
      for (const a of answers) if (a !== undefined) counts.set(a, (counts.get(a) ?? 0) + 1);
      const best = Math.max(0, ...counts.values());
      const winners = [...counts].filter(([, c]) => c === best).map(([a]) => a).sort();
      const v = majorityVote(answers, exact);
      expect(v.label).toBe(winners[0]);
      expect(v.votes).toBe(best);
      expect(v.share).toBeCloseTo(best / answers.length, 12);
    }
  });
});

describe("pseudo-label rewards", () => {
  const answers = ["3", "3", "5", undefined, "3", "5", "7", "3"];
  test("hard: 1 for the majority answer, 0 otherwise (unparseable 0)", () => {
    expect(pseudoLabelRewards(answers, "hard", { equivalent: exact })).toEqual([1, 1, 0, 0, 1, 0, 0, 1]);
  });
  test("soft: the answer's vote share among all rollouts", () => {
    expect(pseudoLabelRewards(answers, "soft", { equivalent: exact })).toEqual([0.5, 0.5, 0.25, 0, 0.5, 0.25, 0.125, 0.5]);
  });
  test("a fixed label (base model's) is matched with the verifier; soft needs the current vote", () => {
    expect(pseudoLabelRewards(["0.5", "1/2", "2", undefined], "hard", { label: "\\frac{1}{2}" })).toEqual([1, 1, 0, 0]);
    expect(() => pseudoLabelRewards(answers, "soft", { label: "3" })).toThrow(/fixed label/);
  });
});

describe("collapse guard", () => {
  test("the majority-share filter drops low-agreement prompts", () => {
    const threshold = 0.6;
    const confident = majorityVote(["4", "4", "4", "4", "4", "1", "2", "3"], exact); // 5/8
    const split = majorityVote(["4", "4", "4", "1", "1", "1", "2", "3"], exact); // 3/8
    const unparseable = majorityVote(["4", "4", "4", "4", undefined, undefined, undefined, undefined], exact); // 4/8
    expect(keepByMajorityShare(confident, threshold)).toBe(true);
    expect(keepByMajorityShare(split, threshold)).toBe(false);
    expect(keepByMajorityShare(unparseable, threshold)).toBe(false);
    expect(keepByMajorityShare(majorityVote([undefined, undefined], exact), 0)).toBe(false);
  });

  test("label accuracy against hidden labels", () => {
    expect(labelAccuracy(["3", undefined, "0.5", "7"], ["3", "2", "1/2", "8"])).toBe(0.5);
    expect(() => labelAccuracy(["3"], [])).toThrow(/1 labels for 0/);
  });

  test("dominant label across prompts", () => {
    expect(dominantLabelShare(["0", "0", "0", "5"], exact)).toEqual({ answer: "0", share: 0.75 });
    expect(dominantLabelShare(["1", "2", "3", "4"], exact).share).toBe(0.25);
  });

  test("the alarm fires on a crafted collapse trace and not on its healthy prefix or on partial signals", () => {
    const healthy = [0.4, 0.5, 0.55, 0.6, 0.62].map((r) => ({ pseudoReward: r, kl: 0.002, dominantShare: 0.1 }));
    for (let t = 1; t <= healthy.length; t++) expect(collapseAlarm(healthy.slice(0, t)).alarm).toBe(false);
    const collapsed = { pseudoReward: 0.99, kl: 0.05, dominantShare: 0.9 };
    expect(collapseAlarm([...healthy, collapsed])).toEqual({ alarm: true, rewardNearOne: true, klSpike: true, dominantAnswer: true });
    // each signal alone is normal: a model that solved the task also earns pseudo-reward near 1
    expect(collapseAlarm([...healthy, { ...collapsed, kl: 0.003 }])).toMatchObject({ alarm: false, klSpike: false });
    expect(collapseAlarm([...healthy, { ...collapsed, dominantShare: 0.2 }])).toMatchObject({ alarm: false, dominantAnswer: false });
    expect(collapseAlarm([...healthy, { ...collapsed, pseudoReward: 0.8 }])).toMatchObject({ alarm: false, rewardNearOne: false });
    // a spike needs history and an absolute size
    expect(collapseAlarm([collapsed]).klSpike).toBe(false);
    const tiny = healthy.map((s) => ({ ...s, kl: 1e-7 }));
    expect(collapseAlarm([...tiny, { ...collapsed, kl: 1e-5 }], DEFAULT_COLLAPSE_ALARM).klSpike).toBe(false);
    expect(() => collapseAlarm([])).toThrow(/at least the current step/);
  });

  test("early stopping: stop after `patience` evaluations without a new best", () => {
    expect(earlyStopping([0.3, 0.4, 0.5], 2)).toMatchObject({ stop: false, best: 0.5, sinceBest: 0 });
    expect(earlyStopping([0.3, 0.5, 0.45, 0.5], 2)).toMatchObject({ stop: true, best: 0.5, bestIndex: 1, sinceBest: 2 }); // equalling the best is no improvement
    expect(earlyStopping([0.3, 0.5, 0.45, 0.5], 3).stop).toBe(false);
    expect(earlyStopping([0.3, 0.5, 0.45, 0.5, 0.2], 3)).toMatchObject({ stop: true, sinceBest: 3 });
    expect(earlyStopping([], 1).stop).toBe(false);
    expect(() => earlyStopping([0.1], 0)).toThrow(/patience/);
  });
});

describe("Octopus + SRT voters", () => {
  test("one vote per rollout on its final answer: o2 after a marker, else o1; a boxless o2 does not vote", () => {
    expect(octopusFinalAnswer("1+2=4 \\boxed{4}" + SEP + "1+2=3 \\boxed{3}", SEP)).toBe("3");
    expect(octopusFinalAnswer("1+2=3 \\boxed{3}", SEP)).toBe("3");
    expect(octopusFinalAnswer("1+2=3 \\boxed{3}" + SEP + "hmm", SEP)).toBeUndefined();
  });
});
