// The command line as a user runs it: real processes, exit codes and messages.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { DEMO_VOCAB_SIZE } from "../lib/demo/model";
import { Model } from "../lib/engine/model";
import { TINY_SPECS } from "./helpers/tiny-models";

const CLI = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-cli-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(...args: string[]) {
  return runFor(120_000, ...args);
}

function runFor(timeout: number, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    env: { ...process.env, XDG_CACHE_HOME: path.join(tmp, "cache") },
    timeout,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function expectCleanFailure(result: ReturnType<typeof run>, message: RegExp) {
  expect(result.signal).toBeNull(); // no crash
  expect(result.status).toBe(1);
  expect(result.stderr).toMatch(/^octo-native: /);
  expect(result.stderr).toMatch(message);
  expect(result.stderr).not.toMatch(/\n\s+at |Exception raised from|terminate called/);
}

test("dist/ is built (npm test builds it first)", () => {
  expect(fs.existsSync(CLI)).toBe(true);
});

test("info --json reports the libtorch version and devices", () => {
  const r = run("info", "--json");
  expect(r.status).toBe(0);
  const info = JSON.parse(r.stdout);
  expect(info.package.name).toBe("octo-native");
  expect(info.libtorch.version).toMatch(/^\d+\.\d+\.\d+/);
  expect(info.devices).toContain("cpu");
  expect(info.devices.length).toBe(1 + info.cuda.deviceCount);
  expect(typeof info.build.torchConfig).toBe("string");
  // Optional features: only known names, and "sdpa" exactly when the attention line says so.
  const known = ["sdpa", "sdpa-gqa", "cuda-graphs", "gemm-out-dtype", "gloo", "nccl"];
  expect(info.features.filter((f: string) => !known.includes(f))).toEqual([]);
  expect(info.features.includes("sdpa")).toBe(info.libtorch.scaledDotProductAttention);
  expect(run("info").stdout).toMatch(/^features {4}/m);
});

test("generate on the built-in demo model is reproducible for a seed", () => {
  const args = ["generate", "--prompt", "What is 12+7? ", "--max-tokens", "16", "--seed", "3", "--json"];
  const first = run(...args);
  expect(first.stderr).toBe("");
  expect(first.status).toBe(0);
  const a = JSON.parse(first.stdout);
  expect(a.builtInModel).toBe(true);
  expect(a.samples).toHaveLength(1);
  expect(a.samples[0].tokens.length).toBeGreaterThan(0);
  expect(a.samples[0].logprobs.every((x: number) => x <= 0 && Number.isFinite(x))).toBe(true);
  const b = JSON.parse(run(...args).stdout);
  expect(b.samples[0].tokens).toEqual(a.samples[0].tokens);
});

describe("bad input gives a clear error and exit code 1, never a crash", () => {
  test("missing model directory", () => {
    expectCleanFailure(run("generate", "--model", path.join(tmp, "nope"), "--prompt", "x"), /nope' does not exist/);
  });

  test("a directory with only pickle weights", () => {
    const dir = path.join(tmp, "pickle-only");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ architectures: ["Qwen2ForCausalLM"], vocab_size: 8, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 }));
    fs.writeFileSync(path.join(dir, "pytorch_model.bin"), "not really");
    expectCleanFailure(run("generate", "--model", dir, "--prompt", "x"), /pickle/);
  });

  test("a truncated model.safetensors", async () => {
    const dir = path.join(tmp, "truncated");
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    await model.save(dir);
    model.dispose();
    const file = path.join(dir, "model.safetensors");
    fs.truncateSync(file, fs.statSync(file).size - 100);
    expectCleanFailure(run("generate", "--model", dir, "--prompt", "x"), /model\.safetensors.*(truncated|bytes)/);
  });

  test("a tokenizer whose vocabulary is larger than the model's", async () => {
    const dir = path.join(tmp, "vocab-mismatch");
    const model = await Model.create({ ...TINY_SPECS.qwen3, vocabSize: 50 }, 1, { device: "cpu" });
    await model.save(dir);
    model.dispose();
    const demo = require("../lib/demo/model");
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(demo.demoTokenizerJson()));
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(demo.demoTokenizerConfig()));
    expectCleanFailure(run("generate", "--model", dir, "--prompt", "x"), new RegExp(`tokenizer has ${DEMO_VOCAB_SIZE} tokens but the model.s vocab_size is 50`));
  });

  test("invalid sampling parameters and unknown options", () => {
    expectCleanFailure(run("generate", "--prompt", "x", "--top-p", "1.5"), /topP/);
    expectCleanFailure(run("generate", "--prompt", "x", "--temprature", "1"), /Unknown argument/);
  });
});

test("bench forward --quick --json prints JSON with a ratio and the environment", () => {
  const r = run("bench", "forward", "--quick", "--json");
  expect(r.status).toBe(0);
  const result = JSON.parse(r.stdout);
  expect(result.bench).toBe("forward");
  expect(result.ratio).toBeGreaterThan(0);
  expect(result.tokensPerSecond).toBeGreaterThan(0);
  expect(result.environment.libtorch).toMatch(/^\d+\.\d+/);
});

describe("train without --config (the embedded demo)", () => {
  test("--set run.seed and run.dir choose the seed and the folder", () => {
    const dir = path.join(tmp, "demo-seed-1");
    // The quick demo: a minute on a quiet 2-core machine, several on a loaded one.
    const r = runFor(540_000, "train", "--quick", "--set", "run.seed=1", "--set", `run.dir=${dir}`);
    expect(r.status).toBe(0);
    const summary = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8"));
    expect(summary.seed).toBe(1);
    expect(fs.readFileSync(path.join(dir, "stage1", "config.yaml"), "utf8")).toMatch(/^run:\n(  .*\n)*  seed: 1\n/);
    expect(r.stdout).toMatch(/Acc@t2 +±SE/);
  }, 600_000);

  test("other keys, a bad seed and --resume are refused, naming what the demo accepts", () => {
    expectCleanFailure(run("train", "--set", "optimizer.lr=0.001"), /--set 'optimizer\.lr=0\.001': the demo \(train without --config\) accepts only --set run\.seed=… and --set run\.dir=…/);
    expectCleanFailure(run("train", "--set", "run.seed=-1"), /run\.seed/);
    expectCleanFailure(run("train", "--set", "run.dir=a", "--dir", "b"), /--dir b and --set run\.dir=a disagree/);
    expectCleanFailure(run("train", "--resume"), /--resume and --allow-config-change need --config/);
  });
});
