/**
 * Evaluation metrics (docs/methods.md §8), pure functions over graded samples.
 *
 *   pass@k   unbiased estimator 1 − C(n−c, k)/C(n, k) over all n samples of a problem
 *   maj@k    the answer most samples agree on (equivalence by the verifier) among the first k
 *   mean@k   the mean correctness of the first k samples
 *
 * Self-correction, over rounds t1 … tR of every sample (fractions of the whole set):
 *
 *   Acc@tr   fraction correct at round r
 *   Δ(ta,tb) Acc@tb − Acc@ta = Δ_i→c − Δ_c→i
 *   Δ_i→c    fraction wrong at ta and right at tb;  Δ_c→i: right at ta, wrong at tb
 *
 * Standard errors are per problem (cluster): the samples of one problem are correlated (an easy
 * problem is right in most of them), so the SE of a fraction is the standard deviation of the
 * per-problem means over √problems, not √(p(1−p)/samples), which would understate it.
 */
import { majorityVote, type AnswerEquivalence } from "../grading/majority";
import { mean } from "../util/stats";

/** One graded attempt: the extracted answer (none when nothing could be extracted) and its verdict. */
export interface GradedAnswer {
  answer?: string;
  correct: boolean;
}

/**
 * pass@k for one problem with `correct` of `samples` samples right: the probability that at least
 * one of k samples drawn without replacement is correct. Product form of 1 − C(n−c,k)/C(n,k)
 * (Chen et al. 2021), stable where the binomials overflow: C(n−c,k)/C(n,k) = ∏_{i=n−c+1}^{n} (1 − k/i).
 */
export function passAtK(samples: number, correct: number, k: number): number {
  if (!Number.isInteger(samples) || !Number.isInteger(correct) || !Number.isInteger(k) || samples < 1 || correct < 0 || correct > samples || k < 1 || k > samples)
    throw new RangeError(`pass@k needs integers 1 <= k <= n and 0 <= c <= n (got n=${samples}, c=${correct}, k=${k})`);
  if (samples - correct < k) return 1;
  let allWrong = 1;
  for (let i = samples - correct + 1; i <= samples; i++) allWrong *= 1 - k / i;
  return 1 - allWrong;
}

/**
 * maj@k of one problem: 1 when the majority answer of its first k attempts is correct. The vote
 * is SRT's (lib/grading/majority): verifier clusters, attempts without an answer do not vote,
 * ties broken by the smallest answer, whatever order the samples came in.
 */
export function majAtK(attempts: GradedAnswer[], k: number, same?: AnswerEquivalence): number {
  checkK(attempts.length, k);
  const first = attempts.slice(0, k);
  const vote = majorityVote(first.map((a) => a.answer), same);
  const winner = vote.clusters[0]?.members.find((i) => first[i].answer === vote.label);
  return winner !== undefined && first[winner].correct ? 1 : 0;
}

/** mean@k of one problem: the fraction of its first k attempts that are correct. */
export function meanAtK(attempts: GradedAnswer[], k: number): number {
  checkK(attempts.length, k);
  return attempts.slice(0, k).filter((a) => a.correct).length / k;
}

function checkK(samples: number, k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > samples) throw new RangeError(`k must be an integer in [1, ${samples}] (the samples per problem), not ${k}`);
}

/** The k values reported by default: powers of two up to n, and n. */
export function defaultKs(samples: number): number[] {
  const ks: number[] = [];
  for (let k = 1; k < samples; k *= 2) ks.push(k);
  ks.push(samples);
  return ks;
}

/** Self-correction between two rounds (fractions of all samples). */
export interface RoundTransition {
  /** rounds, 1-based */
  from: number;
  to: number;
  /** Acc@t_to − Acc@t_from = incorrectToCorrect − correctToIncorrect */
  delta: number;
  incorrectToCorrect: number;
  correctToIncorrect: number;
}

/** The docs/methods.md §8 self-correction numbers for rounds t1 and t2 (the shape train and demo summaries use). */
export interface SelfCorrectionMetrics {
  /** samples graded (problems × samples per problem) */
  count: number;
  accT1: number;
  accT2: number;
  delta: number;
  deltaIncorrectToCorrect: number;
  deltaCorrectToIncorrect: number;
  /** fraction of first responses that emit the correction marker */
  markerRate: number;
  /**
   * Standard errors of the fractions above, per problem (cluster SE): the problems are the
   * independent draws, several samples of one problem are not. Absent in summaries written before.
   */
  standardError?: SelfCorrectionStandardErrors;
}

export interface SelfCorrectionStandardErrors {
  accT1: number;
  accT2: number;
  delta: number;
  deltaIncorrectToCorrect: number;
  deltaCorrectToIncorrect: number;
}

/**
 * The cluster standard error of a mean over problems: `perProblem[p]` is the fraction of problem
 * p's samples with the property; SE = sample std of those fractions / √problems (0 for one problem).
 */
export function clusterStandardError(perProblem: readonly number[]): number {
  const n = perProblem.length;
  if (n < 2) return 0;
  const m = mean(perProblem);
  const variance = perProblem.reduce((a, x) => a + (x - m) ** 2, 0) / (n - 1);
  return Math.sqrt(variance / n);
}

/** The cluster SEs of Acc@t_from, Acc@t_to and the transitions between them. */
export function selfCorrectionStandardErrors(graded: GradedAnswer[][][], from = 1, to = 2): SelfCorrectionStandardErrors {
  const se = (f: (s: GradedAnswer[]) => number) => clusterStandardError(graded.map((samples) => mean(samples.map(f))));
  const right = (s: GradedAnswer[], r: number) => Number(s[r - 1].correct);
  return {
    accT1: se((s) => right(s, from)),
    accT2: se((s) => right(s, to)),
    delta: se((s) => right(s, to) - right(s, from)),
    deltaIncorrectToCorrect: se((s) => Number(!s[from - 1].correct && s[to - 1].correct)),
    deltaCorrectToIncorrect: se((s) => Number(s[from - 1].correct && !s[to - 1].correct)),
  };
}

export interface RoundMetrics {
  round: number;
  /** fraction of all samples correct at this round (Acc@t_round) */
  accuracy: number;
  /** per k (keys are k as text), averaged over problems */
  passAtK: Record<string, number>;
  majAtK: Record<string, number>;
  meanAtK: Record<string, number>;
}

export interface EvalMetrics extends SelfCorrectionMetrics {
  problems: number;
  samplesPerProblem: number;
  rounds: number;
  /** Acc@t1 … Acc@tR */
  accuracy: number[];
  /** consecutive rounds (t1→t2, t2→t3, …), then t1→tR when R > 2 */
  transitions: RoundTransition[];
  byRound: RoundMetrics[];
}

export function roundTransition(graded: GradedAnswer[][][], from: number, to: number): RoundTransition {
  const all = graded.flat();
  const n = Math.max(all.length, 1);
  const up = all.filter((s) => !s[from - 1].correct && s[to - 1].correct).length / n;
  const down = all.filter((s) => s[from - 1].correct && !s[to - 1].correct).length / n;
  const accuracy = (r: number) => all.filter((s) => s[r - 1].correct).length / n;
  return { from, to, delta: accuracy(to) - accuracy(from), incorrectToCorrect: up, correctToIncorrect: down };
}

/**
 * All metrics of an evaluation. `graded[p][s][r]` is round r+1 of sample s of problem p (every
 * problem has the same number of samples, every sample the same rounds, at least 2);
 * `hasMarker[p][s]` whether that sample's first response emitted the correction marker.
 */
export function evaluationMetrics(
  graded: GradedAnswer[][][],
  hasMarker: boolean[][],
  ks: number[],
  same?: (a: string, b: string) => boolean,
): EvalMetrics {
  const problems = graded.length;
  const samplesPerProblem = graded[0]?.length ?? 0;
  const rounds = graded[0]?.[0]?.length ?? 0;
  if (problems === 0) throw new RangeError("nothing to evaluate: no problems");
  if (rounds < 2) throw new RangeError(`self-correction metrics need at least 2 rounds, not ${rounds}`);
  for (const [p, samples] of graded.entries()) {
    if (samples.length !== samplesPerProblem) throw new RangeError(`problem ${p} has ${samples.length} samples, problem 0 has ${samplesPerProblem}`);
    if (samples.some((s) => s.length !== rounds)) throw new RangeError(`problem ${p} has a sample without ${rounds} rounds`);
  }
  for (const k of ks) checkK(samplesPerProblem, k);
  const byRound: RoundMetrics[] = Array.from({ length: rounds }, (_, r) => {
    const perProblem = graded.map((samples) => samples.map((s) => s[r]));
    const perK = (f: (attempts: GradedAnswer[], k: number) => number) =>
      Object.fromEntries(ks.map((k) => [String(k), mean(perProblem.map((a) => f(a, k)))]));
    return {
      round: r + 1,
      accuracy: perProblem.flat().filter((a) => a.correct).length / (problems * samplesPerProblem),
      passAtK: perK((a, k) => passAtK(a.length, a.filter((x) => x.correct).length, k)),
      majAtK: perK((a, k) => majAtK(a, k, same)),
      meanAtK: perK(meanAtK),
    };
  });
  const transitions = Array.from({ length: rounds - 1 }, (_, r) => roundTransition(graded, r + 1, r + 2));
  if (rounds > 2) transitions.push(roundTransition(graded, 1, rounds));
  const first = transitions[0];
  const markers = hasMarker.flat();
  return {
    count: problems * samplesPerProblem,
    accT1: byRound[0].accuracy,
    accT2: byRound[1].accuracy,
    delta: first.delta,
    deltaIncorrectToCorrect: first.incorrectToCorrect,
    deltaCorrectToIncorrect: first.correctToIncorrect,
    markerRate: markers.filter(Boolean).length / Math.max(markers.length, 1),
    standardError: selfCorrectionStandardErrors(graded),
    problems,
    samplesPerProblem,
    rounds,
    accuracy: byRound.map((m) => m.accuracy),
    transitions,
    byRound,
  };
}
