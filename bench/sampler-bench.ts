/**
 * Bench of the rollout sampler (docs/methods.md §3, §11): generated tokens/s of the cached batched
 * sampler against two baselines measured in the same run on the same model and requests:
 *  (a) no KV cache — every token recomputes the whole sequence (the engine's recompute mode);
 *  (b) one sample at a time — the same cached sampler called with one prompt and n = 1.
 * No EOS, so every sample generates exactly maxNewTokens in all three.
 */
import { Model } from "../lib/engine/model";
import type { GenerationRequest, GenerationResult } from "../lib/engine/sampling";
import { native, type ModelSpec } from "../lib/native";
import { benchEnvironment, medianSeconds, type Bench } from "./harness";

/** ~5M parameters (Qwen3 layout): small enough that the no-cache baseline finishes on 2 CPU cores. */
export function samplerBenchSpec(quick: boolean): ModelSpec {
  return {
    architecture: "Qwen3ForCausalLM",
    vocabSize: 8192,
    hiddenSize: quick ? 128 : 256,
    intermediateSize: quick ? 384 : 768,
    numLayers: quick ? 2 : 4,
    numHeads: 4,
    numKvHeads: 2,
    headDim: quick ? 32 : 64,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    tieWordEmbeddings: false,
    attentionBias: false,
    outputBias: false,
    mlpBias: false,
    qkNorm: true,
    rope: { type: "default", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  };
}

function sameTokens(a: GenerationResult[][], b: GenerationResult[][]): number {
  const flatA = a.flat(), flatB = b.flat();
  return flatA.filter((s, i) => s.tokens.join() === flatB[i].tokens.join()).length / flatA.length;
}

export const samplerBench: Bench = {
  description: "cached batched sampler tokens/s vs no-cache recompute and vs one sample at a time (same run, same model)",
  async run({ device, quick }) {
    const spec = samplerBenchSpec(quick);
    const prompts = quick ? 2 : 4, samplesPerPrompt = quick ? 2 : 4, promptTokens = quick ? 16 : 32, newTokens = quick ? 16 : 32;
    const requests: GenerationRequest[] = Array.from({ length: prompts }, (_, p) => ({
      promptIds: Int32Array.from({ length: promptTokens - p }, (_, t) => (p * 7919 + t * 104729) % spec.vocabSize),  // ragged: padding is part of the work
      n: samplesPerPrompt,
      seed: p,
    }));
    // On-policy RL rollouts sample at T = 1 without filters (filters make the log-probs off-policy).
    const params = { temperature: 1, maxNewTokens: newTokens };
    const rows = prompts * samplesPerPrompt, generated = rows * newTokens;
    const model = await Model.create(spec, 0, { device });
    try {
      const cached = await model.generateWithStats(requests, params);
      const cachedSeconds = await medianSeconds(quick ? 2 : 5, () => model.generate(requests, params));
      // The baselines are slow by nature: one timed run each (the cached runs warmed up the engine).
      let start = process.hrtime.bigint();
      const recomputed = await model.generate(requests, params, { recompute: true });
      const recomputeSeconds = Number(process.hrtime.bigint() - start) / 1e9;
      start = process.hrtime.bigint();
      for (const request of requests)
        for (let j = 0; j < samplesPerPrompt; j++) await model.generate([{ promptIds: request.promptIds, seed: (request.seed ?? 0) * 1000 + j }], params);
      const oneAtATimeSeconds = Number(process.hrtime.bigint() - start) / 1e9;

      const cachedTokensPerSecond = generated / cachedSeconds;
      const recomputeTokensPerSecond = generated / recomputeSeconds;
      const oneAtATimeTokensPerSecond = generated / oneAtATimeSeconds;
      const parameters = native().expectedParameters(spec).reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
      return {
        bench: "sampler",
        ratioMeaning:
          "generated tokens/s of the cached batched sampler / tokens/s of the no-cache recompute baseline " +
          "(same requests, same run; prompt processing included in both; higher is better)",
        ratio: cachedTokensPerSecond / recomputeTokensPerSecond,
        ratioVsOneAtATime: cachedTokensPerSecond / oneAtATimeTokensPerSecond,
        ratioVsOneAtATimeMeaning: "cached batched tokens/s / tokens/s of the same sampler called once per sample (batch 1)",
        cachedTokensPerSecond,
        recomputeTokensPerSecond,
        oneAtATimeTokensPerSecond,
        cachedSeconds,
        recomputeSeconds,
        oneAtATimeSeconds,
        // Sanity: the cached path samples what the recompute path samples (same seeds), up to float rounding.
        sameTokensAsRecompute: sameTokens(cached.results, recomputed),
        workload: { prompts, samplesPerPrompt, rows, promptTokens: `${promptTokens - prompts + 1}..${promptTokens}`, newTokens, sampling: params },
        stats: cached.stats,
        parameters,
        device: model.device,
        dtype: model.handle.dtype,
        environment: benchEnvironment(),
      };
    } finally {
      model.dispose();
    }
  },
};
