// CUDA-graph decode against eager decode (scripts/gpu-check.sh, step sampler-graphs): the same
// model and requests generated in two processes, one with the decode step captured in a CUDA graph
// (the default) and one with OCTO_NATIVE_CUDA_GRAPHS=0 (the same static-shape steps run eagerly;
// the engine reads the variable once per process). Greedy tokens must be identical.
//
// Two workloads, each on ragged prompts with one request of n = 4:
//   no-eos:   every sample runs to maxNewTokens (one captured batch size throughout);
//   with-eos: a token that the no-eos run produced mid-way becomes the EOS, so samples finish at
//             different steps and the engine compacts the batch and captures it again.
// Sampled tokens (T = 1, fixed seeds) are compared too and reported, not required: the counter-
// based streams promise the same tokens on the same device, a check of the graph's RNG offsets.
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { dist, runStep, seconds } = require("./step");
const { Model } = dist("lib/engine/model");
const { native } = dist("lib/native");

/**
 * A Qwen2-layout model small enough to create on the CPU in a second, large enough to use the GPU.
 * Untied: with fresh weights (std 0.02) a tied head maps each token back to itself, and greedy
 * decoding would repeat the last prompt token; an independent head makes the tokens vary.
 */
function graphModelSpec(small) {
  return {
    architecture: "Qwen2ForCausalLM",
    vocabSize: small ? 512 : 32000,
    hiddenSize: small ? 64 : 512,
    intermediateSize: small ? 128 : 1536,
    numLayers: small ? 2 : 4,
    numHeads: 8,
    numKvHeads: 2,
    headDim: small ? 8 : 64,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    tieWordEmbeddings: false,
    attentionBias: true,
    outputBias: false,
    mlpBias: false,
    qkNorm: false,
    rope: { type: "default", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
  };
}

function requests(vocab, small) {
  const prompts = small ? 3 : 12;
  return Array.from({ length: prompts }, (_, p) => ({
    promptIds: Int32Array.from({ length: 8 + p }, (_, t) => (p * 7919 + t * 104729) % vocab),
    n: p === 0 ? 4 : 1,
    seed: p,
  }));
}

const flat = (results) => results.flat().map((s) => Array.from(s.tokens));

/** The child: generates every workload on the saved model and writes the tokens. */
async function generateAll({ model: dir, device, small, tokens: out }) {
  const model = await Model.load(dir, { device });
  try {
    const reqs = requests(model.spec.vocabSize, small);
    const maxNewTokens = small ? 24 : 64;
    // The static-shape layout is what CUDA captures; on CUDA it is always on, on the CPU it is the rehearsal.
    const layout = { staticShapes: true };
    const noEos = await seconds(() => model.generateWithStats(reqs, { temperature: 0, maxNewTokens }, layout));
    // The token at a third of the first sample: it recurs at different steps in different rows.
    const eos = flat(noEos.value.results)[0][Math.floor(maxNewTokens / 3)];
    const withEos = await seconds(() => model.generateWithStats(reqs, { temperature: 0, maxNewTokens, eosTokenIds: [eos] }, layout));
    const sampled = await model.generate(reqs, { temperature: 1, maxNewTokens }, layout);
    const workload = (run) => ({ tokens: flat(run.value.results), stats: run.value.stats, seconds: run.seconds });
    fs.writeFileSync(out, JSON.stringify({ device: model.device, dtype: model.handle.dtype, eos, noEos: workload(noEos), withEos: workload(withEos), sampled: flat(sampled) }));
  } finally {
    model.dispose();
  }
}

function sameTokens(a, b) {
  const identical = a.filter((tokens, i) => tokens.join() === (b[i] ?? []).join()).length;
  const first = a.findIndex((tokens, i) => tokens.join() !== (b[i] ?? []).join());
  return { samples: a.length, identical, firstDifferentSample: first < 0 ? null : first };
}

runStep(
  {
    device: { type: "string", default: "cuda" },
    work: { type: "string" },
    small: { type: "boolean", default: false },
    // internal: the child's side
    generate: { type: "boolean", default: false },
    model: { type: "string" },
    tokens: { type: "string" },
  },
  async (options) => {
    if (options.generate) {
      await generateAll(options);
      return { status: "ok" };
    }
    if (!options.work) throw new Error("--work DIR is required (scratch space for the model and the tokens)");
    // Without graphs compiled in, both processes would decode eagerly and agree for nothing.
    const features = native().info().features;
    if (options.device.startsWith("cuda") && Array.isArray(features) && !features.includes("cuda-graphs"))
      return { status: "failed", error: `this build has no CUDA graphs (features: ${features.join(", ") || "none"}): nothing to compare` };
    const modelDir = path.join(options.work, "sampler-graphs-model");
    const created = await Model.create(graphModelSpec(options.small), 0, { device: "cpu" });
    await created.save(modelDir);
    created.dispose();
    const runs = {};
    for (const [name, graphs] of [["graphs", "1"], ["eager", "0"]]) {
      const tokens = path.join(options.work, `sampler-graphs-${name}.json`);
      const childResult = path.join(options.work, `sampler-graphs-${name}.result.json`);
      const args = [__filename, "--generate", "--model", modelDir, "--device", options.device, "--tokens", tokens, "--result", childResult];
      if (options.small) args.push("--small");
      const child = spawnSync(process.execPath, args, { env: { ...process.env, OCTO_NATIVE_CUDA_GRAPHS: graphs }, stdio: "inherit" });
      const childStatus = fs.existsSync(childResult) ? JSON.parse(fs.readFileSync(childResult, "utf8")) : { status: "failed" };
      if (child.status !== 0 || childStatus.status !== "ok")
        return { status: "failed", error: `the ${name} process (OCTO_NATIVE_CUDA_GRAPHS=${graphs}) exited ${child.status ?? child.signal}`, child: childStatus };
      runs[name] = JSON.parse(fs.readFileSync(tokens, "utf8"));
    }
    const { graphs, eager } = runs;
    const greedy = { noEos: sameTokens(graphs.noEos.tokens, eager.noEos.tokens), withEos: sameTokens(graphs.withEos.tokens, eager.withEos.tokens) };
    const identical = Object.values(greedy).every((x) => x.identical === x.samples) && graphs.eos === eager.eos;
    const stats = (run) => ({ seconds: run.seconds, decodeSteps: run.stats.decodeSteps, compactions: run.stats.compactions, generatedTokens: run.stats.generatedTokens });
    return {
      status: identical ? "ok" : "failed",
      greedyIdentical: identical,
      greedy,
      eosToken: { graphs: graphs.eos, eager: eager.eos },
      sampledIdentical: sameTokens(graphs.sampled, eager.sampled),
      device: graphs.device,
      dtype: graphs.dtype,
      buildFeatures: features ?? null,
      model: graphModelSpec(options.small),
      graphs: { noEos: stats(graphs.noEos), withEos: stats(graphs.withEos) },
      eager: { noEos: stats(eager.noEos), withEos: stats(eager.withEos) },
    };
  },
);
