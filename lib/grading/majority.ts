/**
 * Majority vote over extracted answers, equivalence decided by the verifier (docs/methods.md §7):
 * "1/2", "0.5" and "\frac{1}{2}" are one vote cluster. Used by SRT pseudo-labels (§6.4) and
 * by maj@k style metrics.
 */
import { isEquivalent } from "./verify";

export interface AnswerCluster {
  /** the cluster's representative: its lexicographically smallest member (order-independent) */
  answer: string;
  /** indices (into the voted answers) of its members */
  members: number[];
}

export interface MajorityVote {
  /** the winning answer; undefined when no answer was parseable */
  label?: string;
  /** votes of the winning cluster */
  votes: number;
  /** votes / all voters (unparseable answers count as voters that agree with nobody) */
  share: number;
  /** parseable answers */
  parseable: number;
  /** every cluster, most votes first (ties in the tie-break order) */
  clusters: AnswerCluster[];
  /** per voter: the index into `clusters` of its answer, −1 when unparseable */
  clusterOf: number[];
}

/** Equivalence of two answers; the verifier by default. */
export type AnswerEquivalence = (a: string, b: string) => boolean;

/**
 * Clusters `answers` (undefined = unparseable: it does not vote) by equivalence and returns the
 * majority. An answer joins the first cluster whose first member it is equivalent to.
 *
 * Tie-break (deterministic and independent of the order of the voters): among clusters with
 * the most votes, the one whose representative (smallest member by code-unit order) is smallest.
 * Breaking ties by first occurrence would instead hand the label to whichever sample the
 * sampler happened to emit first.
 */
export function majorityVote(answers: ReadonlyArray<string | undefined>, equivalent: AnswerEquivalence = isEquivalent): MajorityVote {
  const clusters: { first: string; members: number[] }[] = [];
  const clusterOf = answers.map((answer, i) => {
    if (answer === undefined || answer.trim() === "") return -1;
    let c = clusters.findIndex((cluster) => cluster.first === answer || equivalent(cluster.first, answer));
    if (c < 0) c = clusters.push({ first: answer, members: [] }) - 1;
    clusters[c].members.push(i);
    return c;
  });
  const representative = (members: number[]) => members.map((i) => answers[i] as string).reduce((a, b) => (b < a ? b : a));
  const ranked = clusters
    .map((c, index) => ({ index, answer: representative(c.members), members: c.members }))
    .sort((a, b) => b.members.length - a.members.length || (a.answer < b.answer ? -1 : a.answer > b.answer ? 1 : 0));
  const rank = new Map(ranked.map((c, r) => [c.index, r]));
  const winner = ranked[0];
  return {
    label: winner?.answer,
    votes: winner?.members.length ?? 0,
    share: answers.length === 0 ? 0 : (winner?.members.length ?? 0) / answers.length,
    parseable: clusterOf.filter((c) => c >= 0).length,
    clusters: ranked.map(({ answer, members }) => ({ answer, members })),
    clusterOf: clusterOf.map((c) => (c < 0 ? -1 : (rank.get(c) as number))),
  };
}
