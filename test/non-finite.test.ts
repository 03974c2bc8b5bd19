// NaN and Inf are never trained into a model, saved, or sampled from: AdamW skips an update that
// would make a weight or second moment non-finite and leaves no trace of it; the trainer and the
// config refuse a NaN, infinite or non-positive learning rate; save refuses non-finite weights and
// load warns of them; generate and eval stop on non-finite logits, naming where.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems } from "../lib/demo/arithmetic";
import { ensureDemoModel } from "../lib/demo/model";
import { Model } from "../lib/engine/model";
import { ops } from "../lib/engine/ops";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { loadConfig } from "../lib/rl/config";
import { mulberry32 } from "./helpers/random";
import { TINY_SPECS } from "./helpers/tiny-models";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-non-finite-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const cli = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
const FLOAT32_MAX = 3.4028234663852886e38;

const bits = (arrays: Float32Array[]) => arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("hex"));

/** Overwrites `values` (float32) into tensor `name` of `dir`'s model.safetensors, from element `start` on. */
function overwriteWeights(dir: string, name: string, start: number, values: number[]): void {
  const file = path.join(dir, "model.safetensors");
  const record = readSafetensorsHeader(file).tensors.find((t) => t.name === name)!;
  expect(record.dtype).toBe("F32");
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, Buffer.from(Float32Array.from(values).buffer), 0, values.length * 4, record.offset + start * 4);
  fs.closeSync(fd);
}

/** The number of NaN/Inf values in a model directory's model.safetensors (F32 tensors). */
function nonFiniteInFile(dir: string): number {
  const file = path.join(dir, "model.safetensors");
  const bytes = fs.readFileSync(file);
  let count = 0;
  for (const t of readSafetensorsHeader(file).tensors) {
    expect(t.dtype).toBe("F32");
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + t.offset, bytes.byteOffset + t.offset + t.byteLength));
    for (const x of values) if (!Number.isFinite(x)) count++;
  }
  return count;
}

describe("AdamW skips an update that would make a weight or second moment NaN/Inf", () => {
  // Three steps, the middle one poisoned: ours must end bit for bit where the other two alone
  // lead, so the skipped step changed no weight, no moment and not the step count (the bias
  // corrections). Before, the first case threw halfway through the update and the other two
  // trained on with an Inf weight or an Inf second moment.
  const shapes = [[6, 5], [5]];
  function threeSteps() {
    const rand = mulberry32(3);
    const tensor = (shape: number[], scale: number) => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rand() - 0.5) * scale);
    return { params: shapes.map((s) => tensor(s, 1)), grads: [0, 1, 2].map(() => shapes.map((s) => tensor(s, 2))), lrs: [1e-3, 2e-3, 3e-3] };
  }
  type Steps = ReturnType<typeof threeSteps>;
  test.each<[string, (s: Steps) => void]>([
    ["a step size beyond float32 (lr 1e38)", (s) => (s.lrs[1] = 1e38)],
    ["a gradient whose square overflows the second moment", (s) => (s.grads[1][0][7] = 1e30)],
    [
      "a weight at the top of the float range pushed past it",
      (s) => {
        s.params[1][2] = FLOAT32_MAX; // a 1-D weight: no decay pulls it back
        for (const g of s.grads) g[1][2] = -1;
        s.lrs[1] = 1e33;
      },
    ],
  ])("%s: the step leaves no trace", async (_case, poison) => {
    const s = threeSteps();
    poison(s);
    const options = { params: s.params, shapes, grads: s.grads, lrs: s.lrs, weightDecay: 0.1 };
    const ours = await ops.adamw(options);
    const withoutIt = await ops.adamw({ ...options, grads: [s.grads[0], s.grads[2]], lrs: [s.lrs[0], s.lrs[2]] });
    expect(bits(ours)).toEqual(bits(withoutIt));
    expect(bits(withoutIt)).not.toEqual(bits(s.params)); // the other two steps did train
  });
});

describe("a training step whose update would overflow", () => {
  const spec = { ...TINY_SPECS.qwen3, numLayers: 1 };
  const rand = mulberry32(8);
  const batch: TrainSequence[] = Array.from({ length: 3 }, () => ({
    tokens: Int32Array.from({ length: 8 }, () => Math.floor(rand() * spec.vocabSize)),
    lossMask: Uint8Array.from({ length: 8 }, (_, t) => (t >= 2 ? 1 : 0)),
  }));

  test.each(["float32", "bfloat16"])("%s: is skipped and counted, weights and optimizer state stay bit-identical, and the next step trains", async (dtype) => {
    const model = await Model.create(spec, 4, { device: "cpu", dtype });
    const schedule = { lr: 1e38, warmupSteps: 0, kind: "constant" as const };
    const trainer = new PolicyTrainer(model, { schedule, weightDecay: 0.1 });
    // The saved weights, and the moments (with the fp32 masters of a bf16 model) and step count, as hashes.
    const snapshot = async (name: string) => {
      const dir = path.join(tmp, `${dtype}-${name}`);
      await model.save(path.join(dir, "model"));
      await trainer.saveState(path.join(dir, "optimizer.safetensors"));
      const files = [path.join(dir, "model", "model.safetensors"), path.join(dir, "optimizer.safetensors")];
      return files.map((f) => createHash("sha256").update(fs.readFileSync(f)).digest("hex"));
    };
    const before = await snapshot("before");
    const report = await trainer.trainStep(batch, { objective: "supervised" });
    expect(report.skipped).toBe(true);
    expect(Number.isFinite(report.gradNorm)).toBe(true); // the gradient was fine; the update was not
    expect(trainer.step).toBe(0);
    expect(await snapshot("after")).toEqual(before);

    schedule.lr = 1e-3; // the trainer reads its schedule at every step
    const next = await trainer.trainStep(batch, { objective: "supervised" });
    expect(next.skipped).toBe(false);
    expect(trainer.step).toBe(1);
    const [trainedWeights] = await snapshot("trained");
    expect(trainedWeights).not.toBe(before[0]);
    expect(await model.handle.nonFiniteParameters()).toEqual([]);
    model.dispose();
  });

  test("a NaN, infinite, zero or negative learning rate is refused up front, naming it", async () => {
    const model = await Model.create(spec, 4, { device: "cpu" });
    for (const lr of [NaN, Infinity, 0, -1e-3])
      expect(() => new PolicyTrainer(model, { schedule: { lr, warmupSteps: 0, kind: "constant" } })).toThrow(`schedule.lr must be a finite number > 0, not ${lr}`);
    expect(() => new PolicyTrainer(model, { schedule: { lr: 1e-3, warmupSteps: NaN, kind: "constant" } })).toThrow(/schedule.warmupSteps must be an integer >= 0, not NaN/);
    model.dispose();
    for (const lr of [".nan", ".inf", "0", "-1"])
      expect(() => loadConfig(undefined, [`optimizer.lr=${lr}`])).toThrow(/key 'optimizer.lr': must be a finite number > 0, not/);
  });
});

describe("a model with NaN/Inf weights", () => {
  // An untied model: one poisoned embedding row touches only the rows whose prompt holds its token.
  const spec = TINY_SPECS.qwen3;
  const poisonedToken = 7;
  let dir = "";
  let model: Model;
  let loadWarnings: string[] = [];
  beforeAll(async () => {
    const created = await Model.create(spec, 5, { device: "cpu" });
    dir = path.join(tmp, "poisoned");
    await created.save(dir);
    created.dispose();
    const row = Array.from({ length: spec.hiddenSize }, (_, i) => (i % 2 === 0 ? NaN : -Infinity));
    overwriteWeights(dir, "model.embed_tokens.weight", poisonedToken * spec.hiddenSize, row);
    const stderr = jest.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      model = await Model.load(dir, { device: "cpu" });
    } finally {
      loadWarnings = stderr.mock.calls.map(([text]) => String(text));
      stderr.mockRestore();
    }
  });
  afterAll(() => model?.dispose());

  test("Model.load warns once on stderr, naming the tensor and its count; save refuses it, naming them too", async () => {
    expect(loadWarnings).toEqual([
      expect.stringMatching(/^octo-native: warning: .*poisoned: 1 tensor\(s\) hold NaN\/Inf values: 'model.embed_tokens.weight' \(64\)\./),
    ]);
    const out = path.join(tmp, "resaved");
    await expect(model.save(out)).rejects.toThrow(/^not saving .*resaved: tensor 'model.embed_tokens.weight' holds 64 NaN\/Inf values/);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith("resaved"))).toEqual([]); // not even a staging directory
  });

  test("generate fails naming the request, sample and token (it returned null log-probs); other rows alone still work", async () => {
    const clean = { promptIds: Int32Array.from([3, 4, 5]) };
    const poisoned = { promptIds: Int32Array.from([3, poisonedToken, 5]), n: 2 };
    for (const options of [{}, { recompute: true }, { staticShapes: true }])
      for (const temperature of [0, 1])
        await expect(model.generate([clean, poisoned], { temperature, maxNewTokens: 4 }, options)).rejects.toThrow(
          /^generate: the model's logits are NaN or Inf for request 1 \(sample 0\) at generated token 0: the model's weights or its inputs produce non-finite values/,
        );
    const [[alone]] = await model.generate([clean], { temperature: 0, maxNewTokens: 4 });
    expect(alone.logprobs.every(Number.isFinite)).toBe(true);
  });

  test("the generate and eval commands exit 1 with that message, naming no C++ frames", async () => {
    const demo = await ensureDemoModel(path.join(tmp, "nan-demo"));
    const embedding = readSafetensorsHeader(path.join(demo, "model.safetensors")).tensors.find((t) => t.name === "model.embed_tokens.weight")!;
    overwriteWeights(demo, embedding.name, 0, new Array(embedding.byteLength / 4).fill(NaN));
    const data = path.join(tmp, "eval.jsonl");
    fs.writeFileSync(data, JSON.stringify({ problem: "1+2", answer: "3" }) + "\n");
    for (const args of [
      ["generate", "--model", demo, "--prompt", "1+2=", "--max-tokens", "4", "--json"],
      ["eval", "--model", demo, "--data", data, "--max-tokens", "4", "--no-chat", "--out", path.join(tmp, "eval-out")],
    ]) {
      const r = spawnSync(process.execPath, [cli, ...args, "--device", "cpu"], { encoding: "utf8", timeout: 120_000 });
      expect({ command: args[0], status: r.status }).toEqual({ command: args[0], status: 1 });
      expect(r.stderr).toMatch(/warning: .*1 tensor\(s\) hold NaN\/Inf values: 'model.embed_tokens.weight' \(\d+\)/);
      expect(r.stderr).toMatch(/generate: the model's logits are NaN or Inf for request 0 \(sample 0\) at generated token 0/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});

test("train with optimizer.lr=1e30 skips the overflowing steps, stops with the skipped-steps message, and checkpoints no Inf weight", async () => {
  // Before: exit 0, and 799,616 of the demo model's 801,024 weights Inf in the final checkpoint.
  const model = await ensureDemoModel(path.join(tmp, "demo"));
  const data = path.join(tmp, "train.jsonl");
  fs.writeFileSync(data, arithmeticProblems(8, 11).map((e) => JSON.stringify({ problem: e.problem, answer: e.answer })).join("\n") + "\n");
  const runDir = path.join(tmp, "lr-1e30");
  const r = spawnSync(process.execPath, [
    cli, "train", "--config", path.join(__dirname, "..", "configs", "demo.yaml"), "--dir", runDir, "--set", `model.path=${model}`,
    `data.train.path=${data}`, "run.steps=3", "run.saveEvery=1", "run.maxSkippedSteps=1", "rollout.promptsPerStep=2",
    "rollout.samplesPerPrompt=2", "rollout.maxNewTokens=16", "optimizer.lr=1e30",
  ], { encoding: "utf8", timeout: 300_000 });
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/2 steps had a NaN\/Inf loss, gradient or update \(limit run.maxSkippedSteps = 1\); the last good checkpoint is intact. An update overflows when optimizer.lr \(1e\+30\) is far too large/);
  const skipped = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).skipped);
  expect(skipped).toEqual([false, true, true]); // step 1 makes the weights ~1e27; decaying them again overflows
  const checkpoints = fs.readdirSync(path.join(runDir, "checkpoints")).filter((d) => /^step-\d+$/.test(d));
  expect(checkpoints).toEqual(["step-000001", "step-000002"]);
  for (const c of checkpoints) expect(nonFiniteInFile(path.join(runDir, "checkpoints", c))).toBe(0);
});
