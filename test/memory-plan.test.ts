// The memory planner (docs/methods.md §13, lib/engine/memory-plan.ts): its arithmetic by hand on a
// tiny config, the sharded terms' 1/W, the mirrors of the engine's own formulas (parameter shapes,
// the log-prob op's plan), the published 8B configs at 8 × 80 GB, planned against measured peak
// tensor bytes on CPU, `octo-native plan`'s output and errors, and train's refusal at start-up.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { measureRanks } from "../bench/memory-plan-bench";
import type { MemoryJob } from "../bench/memory-plan-worker";
import { benchModelSpec } from "../bench/model-benches";
import { QWEN3_LAYOUT } from "../lib/engine/model-config";
import { loraParameterCount, parameterCounts, parseMemorySize, planMemory, planTokenLogprobs, type MemoryPlanInput } from "../lib/engine/memory-plan";
import { native, type ModelSpec } from "../lib/native";
import { loadConfig, parseConfig } from "../lib/rl/config";
import { planInput, readModelSpec, STARTUP_PROMPT_TOKENS, withPlanOverrides } from "../lib/rl/memory-check";
import { TINY_SPECS } from "./helpers/tiny-models";

const ROOT = path.join(__dirname, "..");
const CLI = path.join(ROOT, "dist", "lib", "commands", "cli.js");
const WORKER = path.join(ROOT, "dist", "bench", "memory-plan-worker.js");
const QWEN3_8B = path.join(__dirname, "fixtures", "configs", "qwen3-8b");
const LLAMA_31_8B = path.join(__dirname, "fixtures", "configs", "llama-3.1-8b");
const GIB = 2 ** 30;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-plan-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, OCTO_NATIVE_THREADS: "1", XDG_CACHE_HOME: path.join(tmp, "cache") }, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// V 10, C 8, I 16, 2 layers, 2 query heads and 1 key/value head of 4, tied embeddings, q/k norm.
const HAND: ModelSpec = { ...QWEN3_LAYOUT, vocabSize: 10, hiddenSize: 8, intermediateSize: 16, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 4, rmsNormEps: 1e-6, ropeTheta: 10000, tieWordEmbeddings: true };

function handInput(overrides: Partial<MemoryPlanInput> = {}): MemoryPlanInput {
  return {
    spec: HAND, device: "cuda", dtype: "bfloat16", attention: "explicit", worldSize: 1, strategy: "ddp", reference: true,
    rollout: { rows: 2, promptTokens: 3, maxNewTokens: 5 },
    training: { microBatchSize: 1, sequenceTokens: 4, lossTokens: 3, microBatchesPerStep: 1, activationCheckpointing: false, logprobChunkSize: 0, entropy: false },
    bucketBytes: 25 * 2 ** 20, memoryBytes: 80 * GIB, ...overrides,
  };
}

describe("arithmetic by hand (tiny config)", () => {
  // A layer: norms 2·8 + q/k norm 2·4 = 24; q 8·8 = 64, k and v 4·8 = 32 each, o 64; gate, up, down 16·8 = 128 each.
  // Outside the layers: the embedding 10·8 = 80 (tied: no LM head) and the final norm 8.
  const P = 88 + 2 * 600;

  test("parameters", () => {
    expect(parameterCounts(HAND)).toEqual({ total: P, perLayer: 600, embedding: 80, lmHead: 0, outsideLayers: 88 });
    // rank 2 on q (8 → 8), v (8 → 4), down (16 → 8): 2·(16 + 12 + 24) per layer
    expect(loraParameterCount(HAND, 2, ["q_proj", "v_proj", "down_proj"])).toBe(2 * 2 * (16 + 12 + 24));
  });

  test("bf16 on one GPU: weights 2, master 4, Adam 8, main gradients 4 bytes per parameter, the reference 2", () => {
    const b = planMemory(handInput()).breakdown;
    expect([b.weights, b.master, b.optimizer, b.reference]).toEqual([2 * P, 4 * P, 8 * P, 2 * P]);
    // gradients: 4 B/param fp32 main gradients, plus autograd's bf16 ones at the end of backward (2 B/param)
    expect(b.gradients).toBe(4 * P + 2 * P);
    expect(b.optimizerStep).toBe(4 * P); // sqrt(v)
    expect(b.runtimeReserve).toBe(1.5 * GIB);
  });

  test("fp32 on CPU: the weights are the masters; gradients live only while training", () => {
    const b = planMemory(handInput({ device: "cpu", dtype: "float32", reference: false })).breakdown;
    expect([b.weights, b.master, b.optimizer, b.reference, b.runtimeReserve]).toEqual([4 * P, 0, 8 * P, 0, 0]);
    expect(b.gradients).toBe(4 * P); // .grad, in the step beside sqrt(v)
  });

  test("KV cache of the rollout (sampler.cpp's preallocation) and its compaction copy", () => {
    const b = planMemory(handInput()).breakdown;
    // per row: 7 slots (3 prompt + 5 new − 1) × (2 layers · k,v · 1 head · 4 · 2 bytes + 1 mask byte),
    // 5 tokens (int64) and log-probs (fp32), the first logits 10 × 4
    expect(b.kvCache).toBe(2 * (7 * 33 + 5 * 12 + 10 * 4));
    expect(b.kvCompaction).toBe(0.75 * 2 * 7 * 32);
  });

  test("activations of a micro-batch of 1 × 4 tokens, fp32, explicit attention", () => {
    const b = planMemory(handInput({ device: "cpu", dtype: "float32" })).breakdown;
    const N = 4, f = 4;
    const attention =
      N * 8 * 2 * f + // input norm: normalised and output
      16 * 8 * f + // q/k/v weights concatenated
      N * 16 * f + // q/k/v projections
      N * 8 * 2 * f + N * 4 * 2 * f + // q and k norms
      N * 12 * f + // rotate_half of q and k
      N * 8 * f + 2 * N * 8 * f + // queries in the GEMM's layout, keys and values expanded to 2 heads
      1 * 2 * 4 * 4 * f + 4 * 4 + // softmax probabilities [1, 2, 4, 4] fp32, inverted mask
      N * 8 * f + // attention output reshaped
      N * 8 * f; // h
    const mlp = N * 8 * 2 * f + 4 * N * 16 * f + N * 8 * f;
    const outside = N * 8 * f + 2 * N * 4 * f + N * 8 * f + 3 * 8 * f + 4 * 4; // embedding out, cos/sin, final norm, 3 loss tokens' hidden, mask
    expect(attention + mlp).toBe(3792);
    expect(b.activationsWithoutCheckpointing).toBe(outside + 2 * (attention + mlp));
    expect(b.activationsWithCheckpointing).toBe(outside + 2 * N * 8 * f); // each layer keeps its input
    expect(planMemory(handInput({ device: "cpu", dtype: "float32", training: { ...handInput().training, activationCheckpointing: true } })).breakdown.activations).toBe(outside + 2 * N * 8 * f);
  });

  test("LoRA: the base frozen in bf16, only the adapters get masters, Adam and gradients; no reference copy", () => {
    const lora = { rank: 2, targetModules: ["q_proj", "v_proj", "down_proj"] as const };
    const A = loraParameterCount(HAND, 2, lora.targetModules);
    const b = planMemory(handInput({ lora })).breakdown;
    expect([b.weights, b.master, b.optimizer, b.reference]).toEqual([2 * (P + A), 4 * A, 8 * A, 0]);
  });
});

describe("sharding", () => {
  const counts = parameterCounts(HAND);
  const at = (strategy: "ddp" | "zero2" | "fsdp", W: number) => planMemory(handInput({ strategy, worldSize: W })).breakdown;

  test.each([1, 2, 3, 4, 8])("zero2 and fsdp hold 1/W of master, Adam and main gradients; fsdp of the weights and reference too (W = %i)", (W) => {
    const shard = Math.ceil(counts.total / W);
    for (const strategy of ["zero2", "fsdp"] as const) {
      const b = at(strategy, W);
      expect(b.master).toBe(4 * shard);
      expect(b.optimizer).toBe(8 * shard);
      expect(b.optimizerStep).toBe(4 * shard);
    }
    expect(at("zero2", W).weights).toBe(2 * counts.total);
    expect(at("fsdp", W).weights).toBe(2 * shard);
    expect(at("fsdp", W).reference).toBe(2 * shard);
    // ddp replicates whatever W
    expect(at("ddp", W).optimizer).toBe(8 * counts.total);
    expect(at("ddp", W).weights).toBe(2 * counts.total);
  });

  test("fsdp gathers one layer and the next (prefetched) besides embedding and LM head, and the full weights to generate", () => {
    const plan = planMemory(handInput({ strategy: "fsdp", worldSize: 4 }));
    expect(plan.breakdown.gatheredWeights).toBe(Math.max(2 * counts.total, 2 * (counts.outsideLayers + 2 * counts.perLayer)));
  });
});

describe("mirrors of the engine's formulas", () => {
  test("parameter counts equal the engine's expectedParameters", () => {
    const specs = [...Object.values(TINY_SPECS), readModelSpec(QWEN3_8B), readModelSpec(LLAMA_31_8B), benchModelSpec(false)];
    for (const spec of specs) {
      const engine = native().expectedParameters(spec).reduce((n, p) => n + p.shape.reduce((x, y) => x * y, 1), 0);
      expect(parameterCounts(spec).total).toBe(engine);
    }
    // the published counts
    expect(parameterCounts(readModelSpec(LLAMA_31_8B)).total).toBe(8_030_261_248);
    expect(parameterCounts(readModelSpec(QWEN3_8B)).total).toBe(8_190_735_360);
  });

  test.each([
    [40, 16, 500, false],
    [600, 16, 500, false],
    [600, 16, 500, true],
    [3000, 8, 300, false],
  ])("the log-prob op's plan equals the engine's (%i tokens, hidden %i, vocab %i, entropy %s)", async (tokens, hidden, vocab, withEntropy) => {
    const ops = native().ops;
    const args = {
      hidden: new Float32Array(tokens * hidden).fill(0.01), weight: new Float32Array(vocab * hidden).fill(0.02), targets: new Int32Array(tokens),
      tokens, hiddenSize: hidden, vocabSize: vocab, chunkSize: 0, withEntropy,
    };
    const shape = { tokens, hidden, vocab, elementBytes: 4, cpu: true, withEntropy, chunkSize: 0 };
    const upstream = { gradLogprobs: new Float32Array(tokens).fill(1), ...(withEntropy ? { gradEntropy: new Float32Array(tokens).fill(1) } : {}) };
    expect((await ops.tokenLogprobs(args)).plan).toEqual(planTokenLogprobs({ ...shape, hiddenGrad: false, lmHeadGrad: false }));
    expect((await ops.tokenLogprobs({ ...args, ...upstream })).plan).toEqual(planTokenLogprobs({ ...shape, hiddenGrad: true, lmHeadGrad: true }));
    expect((await ops.tokenLogprobs({ ...args, ...upstream, lmHeadGrad: false })).plan).toEqual(planTokenLogprobs({ ...shape, hiddenGrad: true, lmHeadGrad: false }));
  });
});

describe("the published 8B configs at 8 × 80 GB, the Octopus Stage I recipe's batch", () => {
  const GPU = parseMemorySize("80GB", "--gpu-memory");
  const planFor = (modelDir: string, W: number, overrides: Parameters<typeof withPlanOverrides>[1], set: string[] = []) => {
    const config = withPlanOverrides(loadConfig(path.join(ROOT, "configs", "octopus-stage1.yaml"), [`model.path=${modelDir}`, ...set]), overrides);
    return planMemory(planInput(config, readModelSpec(modelDir), { device: "cuda", worldSize: W, memoryBytes: GPU, attention: "sdpa-gqa" }));
  };

  test.each([["Qwen3-8B", QWEN3_8B], ["Llama-3.1-8B", LLAMA_31_8B]])("%s", (_, dir) => {
    // ddp: the model state alone (bf16 weights, fp32 master, Adam, fp32 gradient buckets, the reference) is over 80 GB
    const ddp = planFor(dir, 8, { strategy: "ddp" });
    const b = ddp.breakdown;
    expect(ddp.fits).toBe(false);
    expect(b.weights + b.master + b.optimizer + b.gradients + b.reference).toBeGreaterThan(GPU);
    expect(ddp.largestMicroBatch).toBe(0);

    // zero2 and fsdp: the model state and the training step fit, with room for larger micro-batches
    for (const strategy of ["zero2", "fsdp"] as const) {
      const sharded = planFor(dir, 8, { strategy });
      expect(sharded.phases.training).toBeLessThan(GPU);
      expect(sharded.phases.logprobs).toBeLessThan(GPU);
      expect(sharded.largestMicroBatch).toBeGreaterThanOrEqual(8);
      // but not the recipe's rollout: 8 prompts × 8 samples per GPU, each row's 512 + 4096 slots
      // preallocated (bf16: 144 KiB per token for Qwen3-8B), and the copy a compaction makes
      expect(sharded.fits).toBe(false);
      expect(sharded.peakPhase).toBe("rollout");
    }
    // fsdp fits the whole step with half the prompts per step (4 per GPU)
    const fsdp = planFor(dir, 8, { strategy: "fsdp" });
    expect(fsdp.largestRolloutRows).toBeGreaterThanOrEqual(32);
    expect(planFor(dir, 8, { strategy: "fsdp" }, ["rollout.promptsPerStep=32"]).fits).toBe(true);

    // LoRA r = 64 on one GPU: the frozen base, no reference copy; the training step fits, and the
    // whole step with 6 prompts × 8 samples per step
    const lora = planFor(dir, 1, { loraRank: 64 });
    expect(lora.breakdown.reference).toBe(0);
    expect(lora.phases.training).toBeLessThan(GPU);
    expect(lora.phases.logprobs).toBeLessThan(GPU);
    expect(planFor(dir, 1, { loraRank: 64 }, ["rollout.promptsPerStep=6"]).fits).toBe(true);
  });
});

describe("planned against measured (CPU, ddp, peak bytes of live tensors)", () => {
  // The engine's CPU allocator counts every tensor byte: the same on any CPU and BLAS. The planner
  // lands within 1% at these shapes (bench memory-plan: within 0.7% on the ~54M-parameter model at
  // 1, 2 and 4 ranks), so the issue's ±15% band holds with a wide margin.
  const job: MemoryJob = { spec: benchModelSpec(true), sequencesPerRank: 4, length: 128, promptTokens: 16, microBatchSize: 2, activationCheckpointing: false, timeoutSeconds: 120 };
  const expectWithinBand = (planned: number, measured: number) => {
    expect(planned / measured).toBeGreaterThan(0.85);
    expect(planned / measured).toBeLessThan(1.15);
  };

  test.each([
    [1, false],
    [1, true],
    [2, true],
  ])("%i rank(s), activation checkpointing %s", async (nproc, activationCheckpointing) => {
    const ranks = await measureRanks({ ...job, activationCheckpointing }, nproc, WORKER);
    expect(ranks).toHaveLength(nproc);
    for (const r of ranks) {
      expectWithinBand(r.plannedTrainingBytes, r.measuredTrainingBytes);
      expectWithinBand(r.plannedLogprobsBytes, r.measuredLogprobsBytes);
    }
  });
});

describe("octo-native plan", () => {
  test("--json: fits, bytesPerGpu and the breakdown", () => {
    const r = cli("plan", "--model", QWEN3_8B, "--nproc", "8", "--gpu-memory", "80GB", "--strategy", "fsdp", "--json");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const plan = JSON.parse(r.stdout);
    expect(typeof plan.fits).toBe("boolean");
    expect(typeof plan.bytesPerGpu).toBe("number");
    expect(plan.memoryBytes).toBe(80 * GIB);
    for (const key of ["weights", "gradients", "master", "optimizer", "reference", "activations", "activationsWithCheckpointing", "activationsWithoutCheckpointing", "logprobWorkspace", "kvCache"])
      expect(typeof plan.breakdown[key]).toBe("number");
    expect(plan.bytesPerGpu).toBe(Math.max(plan.phases.rollout, plan.phases.logprobs, plan.phases.training));
    expect(Number.isInteger(plan.largestMicroBatch)).toBe(true);
    expect(plan.setup).toMatchObject({ strategy: "fsdp", worldSize: 8, device: "cuda" });
  });

  test("a table in GiB by default; --config reads the recipe, --lora and --strategy override it", () => {
    const recipe = path.join(tmp, "octopus-llama.yaml");
    fs.writeFileSync(recipe, fs.readFileSync(path.join(ROOT, "configs", "octopus-stage1.yaml"), "utf8").replace("models/cold-start", LLAMA_31_8B));
    const r = cli("plan", "--config", recipe, "--nproc", "1", "--gpu-memory", "80GB", "--lora", "64");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^LlamaForCausalLM: 8\.\d+ B parameters, 0\.\d+ B trained, bfloat16 on cuda/);
    expect(r.stdout).toMatch(/reference \(the base, adapters off\)\s+0\.00/);
    expect(r.stdout).toMatch(/largest micro-batch that fits: \d+/);
    expect(r.stdout).toMatch(/GiB/);
  });

  test("bad input names the file, the key or the option", () => {
    const empty = path.join(tmp, "no-config");
    fs.mkdirSync(empty, { recursive: true });
    const missing = cli("plan", "--model", empty, "--gpu-memory", "80GB");
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(new RegExp(`^octo-native: ${empty} has no config.json`));

    const keyless = path.join(tmp, "keyless");
    fs.mkdirSync(keyless, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(QWEN3_8B, "config.json"), "utf8"));
    delete config.hidden_size;
    fs.writeFileSync(path.join(keyless, "config.json"), JSON.stringify(config));
    const noKey = cli("plan", "--model", keyless, "--gpu-memory", "80GB");
    expect(noKey.status).toBe(1);
    expect(noKey.stderr).toContain(`${path.join(keyless, "config.json")}: key 'hidden_size'`);

    const badSize = cli("plan", "--model", QWEN3_8B, "--gpu-memory", "80XB");
    expect(badSize.status).toBe(1);
    expect(badSize.stderr).toMatch(/--gpu-memory: '80XB' is not a memory size; write a number and a unit, e.g. 80GB/);

    expect(cli("plan", "--gpu-memory", "80GB").stderr).toMatch(/give --model DIR .* or --config FILE/);
    expect(cli("plan", "--model", QWEN3_8B, "--gpu-memory", "80GB", "--nproc", "0").stderr).toMatch(/--nproc must be a positive integer/);
  });

  test("memory sizes: GB and GiB are 2^30 bytes", () => {
    expect(parseMemorySize("80GB", "x")).toBe(80 * GIB);
    expect(parseMemorySize("79.6 GiB", "x")).toBe(Math.floor(79.6 * GIB));
    expect(parseMemorySize("81559MiB", "x")).toBe(81559 * 2 ** 20);
    expect(parseMemorySize("1024", "x")).toBe(1024);
    for (const bad of ["80XB", "-1GB", "GB", "0GB", "80 G B"]) expect(() => parseMemorySize(bad, "--gpu-memory")).toThrow(/--gpu-memory/);
  });
});

describe("train's start-up check", () => {
  test("a configuration that cannot fit is refused with the plan before anything is loaded; --skip-memory-check starts anyway", () => {
    const data = path.join(tmp, "train.jsonl");
    fs.writeFileSync(data, JSON.stringify({ problem: "1+1", answer: "2" }) + "\n");
    const runDir = path.join(tmp, "refused-run");
    // An 8B model on this CPU: only its config.json exists, so the run could not even load it.
    const recipe = path.join(tmp, "too-big.yaml");
    fs.writeFileSync(recipe, [`run: { dir: ${runDir}, steps: 1 }`, `model: { path: ${QWEN3_8B}, device: cpu, dtype: float32 }`, `data: { train: { path: ${data} }, chat: false }`].join("\n") + "\n");
    const refused = cli("train", "--config", recipe);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/this configuration does not fit cpu \(.* GiB, host memory\) by the memory plan/);
    expect(refused.stderr).toMatch(/does NOT fit: .* at the peak/);
    expect(refused.stderr).toMatch(/--skip-memory-check/);
    expect(fs.existsSync(runDir)).toBe(false); // refused before the run directory was taken

    const skipped = cli("train", "--config", recipe, "--skip-memory-check");
    expect(skipped.status).toBe(1);
    expect(skipped.stderr).toMatch(/has no model\.safetensors/); // it went on to load the model
  });

  test("the embedded demo's recipe fits, as train checks it (prompts of 1 token: the data is not read yet)", () => {
    const config = parseConfig({ model: { path: "demo", device: "cpu" }, rollout: { promptsPerStep: 16, samplesPerPrompt: 8, maxNewTokens: 112 }, training: { microBatchSize: 64 } });
    const target = { device: "cpu" as const, worldSize: 1, memoryBytes: 2 * GIB, attention: "explicit" as const };
    expect(planMemory(planInput(config, readModelSpec("demo"), { ...target, promptTokens: STARTUP_PROMPT_TOKENS })).fits).toBe(true);
    // and with the demo's real prompts (about 12 characters, one token each), well under 2 GiB
    expect(planMemory(planInput(config, readModelSpec("demo"), { ...target, promptTokens: 16 })).bytesPerGpu).toBeLessThan(GIB);
  });
});
