// Our decode rate against transformers' `generate` (scripts/gpu-check.sh, step decode-throughput):
// the random Qwen2.5-0.5B-shaped checkpoint that decode_baseline.py saved and timed, loaded by our
// engine (bf16 on CUDA) and run on the very same requests: greedy, the baseline's prompts, exactly
// its number of new tokens per row (no EOS). One warm-up call of 8 tokens, then one timed call,
// prefill included, as on the transformers side. ratio = our tokens/s / transformers' tokens/s.
"use strict";
const fs = require("node:fs");

const { dist, runStep, seconds } = require("./step");
const { Model } = dist("lib/engine/model");

/** Rows whose first k generated tokens equal transformers' (greedy on the same weights; bf16 near-ties may split them). */
function prefixAgreement(ours, theirs) {
  const k = theirs[0].length;
  return { rows: theirs.length, tokens: k, agreeing: theirs.filter((row, i) => row.join() === Array.from(ours[i].slice(0, k)).join()).length };
}

runStep(
  { device: { type: "string", default: "cuda" }, model: { type: "string" }, baseline: { type: "string" } },
  async ({ device, model: dir, baseline: baselineFile }) => {
    if (!dir || !baselineFile) throw new Error("--model DIR and --baseline FILE (decode_baseline.py's) are required");
    const baseline = JSON.parse(fs.readFileSync(baselineFile, "utf8"));
    const model = await Model.load(dir, { device });
    try {
      const requests = baseline.prompts.map((ids) => ({ promptIds: Int32Array.from(ids) }));
      const params = { temperature: 0, eosTokenIds: [] };
      await model.generate(requests, { ...params, maxNewTokens: 8 });
      const timed = await seconds(() => model.generateWithStats(requests, { ...params, maxNewTokens: baseline.newTokens }));
      const samples = timed.value.results.map((r) => r[0].tokens);
      const short = samples.filter((tokens) => tokens.length !== baseline.newTokens).length;
      if (short > 0) throw new Error(`${short} of ${samples.length} rows generated fewer than ${baseline.newTokens} tokens`);
      const tokensPerSecond = (samples.length * baseline.newTokens) / timed.seconds;
      return {
        status: "ok",
        ratio: tokensPerSecond / baseline.tokensPerSecond,
        ratioMeaning: "our generated tokens/s / transformers generate's, same weights and requests (higher is better)",
        ours: { tokensPerSecond, seconds: timed.seconds, device: model.device, dtype: model.handle.dtype, cudaGraphs: model.device.startsWith("cuda") && process.env.OCTO_NATIVE_CUDA_GRAPHS !== "0", stats: timed.value.stats },
        transformers: { tokensPerSecond: baseline.tokensPerSecond, seconds: baseline.seconds, version: baseline.transformers, torch: baseline.torch, attention: baseline.attention },
        workload: { batch: samples.length, promptTokens: baseline.promptTokens, newTokens: baseline.newTokens, greedy: true, prefillIncluded: true },
        model: baseline.model,
        greedyPrefixAgreement: prefixAgreement(samples, baseline.firstTokens),
      };
    } finally {
      model.dispose();
    }
  },
);
