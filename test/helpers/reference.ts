// Reference computations in plain TypeScript (float64) that the engine's sampler is checked
// against: full forwards without a KV cache, log-softmax, and the top-k/top-p/min-p filter.
import type { Model } from "../../lib/engine/model";

/** Next-token logits after `sequence`, from one full forward of it alone (no cache, no padding). */
export async function nextTokenLogits(model: Model, sequence: ArrayLike<number>): Promise<Float32Array> {
  const V = model.spec.vocabSize;
  const logits = await model.forward(Int32Array.from(sequence), 1, sequence.length);
  return logits.subarray((sequence.length - 1) * V, sequence.length * V);
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export function logSoftmax(logits: ArrayLike<number>, temperature = 1): Float64Array {
  const scaled = Float64Array.from(logits, (x) => x / temperature);
  const max = Math.max(...scaled);
  const logSum = Math.log(scaled.reduce((s, x) => s + Math.exp(x - max), 0)) + max;
  return scaled.map((x) => x - logSum);
}

export interface FilterParams {
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
}

/**
 * The distribution the sampler must draw from: softmax(logits / T), then top-k, top-p over
 * what is left (renormalised), then min-p — transformers' order. Also returns how far the
 * nearest token is from a top-p/min-p cut, so a test can refuse a case that float32 rounding
 * could decide either way.
 */
export function filteredDistribution(logits: ArrayLike<number>, params: FilterParams): { probs: Float64Array; margin: number } {
  const V = logits.length;
  const logp = logSoftmax(logits, params.temperature);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logp[b] - logp[a]);
  const keep = new Array<boolean>(V).fill(true);
  let margin = Infinity;
  if (params.topK && params.topK < V) {
    const kth = logp[order[params.topK - 1]];
    for (let i = 0; i < V; i++) keep[i] = logp[i] >= kth;
  }
  const renormalised = () => {
    const p = Float64Array.from(logp, (x, i) => (keep[i] ? Math.exp(x) : 0));
    const z = p.reduce((s, x) => s + x, 0);
    return p.map((x) => x / z);
  };
  if (params.topP !== undefined && params.topP < 1) {
    const p = renormalised();
    let before = 0;
    for (const i of order) {
      if (!keep[i]) continue;
      margin = Math.min(margin, Math.abs(before - params.topP));
      if (before >= params.topP) keep[i] = false;
      before += p[i];
    }
  }
  if (params.minP) {
    const p = renormalised();
    const floor = Math.max(...p) * params.minP;
    for (let i = 0; i < V; i++) {
      if (!keep[i]) continue;
      margin = Math.min(margin, Math.abs(p[i] - floor));
      if (p[i] < floor) keep[i] = false;
    }
  }
  return { probs: renormalised(), margin };
}

/**
 * Pearson's chi-square statistic of `counts` against `probs`, bins with an expected count
 * below 5 merged into one, and the critical value at significance `alpha` for its degrees of
 * freedom (Wilson–Hilferty approximation): a correct sampler exceeds it with probability alpha.
 */
export function chiSquareTest(counts: number[], probs: Float64Array, alpha: number): { statistic: number; critical: number; bins: number } {
  const total = counts.reduce((s, c) => s + c, 0);
  const bins: { observed: number; expected: number }[] = [];
  const rest = { observed: 0, expected: 0 };
  probs.forEach((p, i) => {
    if (p === 0) return;
    const bin = { observed: counts[i], expected: p * total };
    if (bin.expected >= 5) bins.push(bin);
    else {
      rest.observed += bin.observed;
      rest.expected += bin.expected;
    }
  });
  if (rest.expected > 0) bins.push(rest);
  const statistic = bins.reduce((s, b) => s + (b.observed - b.expected) ** 2 / b.expected, 0);
  const df = bins.length - 1;
  const z = standardNormalQuantile(1 - alpha);
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { statistic, critical, bins: bins.length };
}

/** Quantile of the standard normal (Acklam's rational approximation, |error| < 1.2e-9). */
function standardNormalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5, r = q * q;
  return ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}
