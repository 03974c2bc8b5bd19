// Engine behaviour that needs no outside reference: save/load round trips in the Hugging Face
// layout, cached generation against full forwards, padding, determinism, handle lifecycle.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { configFromModelSpec, modelSpecFromConfig } from "../lib/engine/model-config";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { TINY_SPECS } from "./helpers/tiny-models";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-model-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function tensorTable(dir: string): string[] {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors"));
  return files.flatMap((f) => readSafetensorsHeader(path.join(dir, f)).tensors.map((t) => `${t.name} ${t.dtype} [${t.shape}]`)).sort();
}

const ids = Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 37 + 5) % 96);

describe.each(Object.entries(TINY_SPECS))("%s", (family, spec) => {
  test("config.json written for the spec maps back to the same spec", () => {
    expect(modelSpecFromConfig(configFromModelSpec(spec))).toEqual(spec);
  });

  test("load -> save -> reload gives identical logits and the same tensor names, dtypes and shapes", async () => {
    const original = path.join(tmp, `${family}-original`);
    const created = await Model.create(spec, 7, { device: "cpu" });
    await created.save(original);
    created.dispose();

    const loaded = await Model.load(original, { device: "cpu" });
    const before = await loaded.forward(ids, 2, 9);
    const copy = path.join(tmp, `${family}-copy`);
    await loaded.save(copy);
    loaded.dispose();
    const reloaded = await Model.load(copy, { device: "cpu" });
    const after = await reloaded.forward(ids, 2, 9);
    reloaded.dispose();

    expect(maxAbsDiff(before, after)).toBe(0);
    expect(tensorTable(copy)).toEqual(tensorTable(original));
    expect(JSON.parse(fs.readFileSync(path.join(copy, "config.json"), "utf8"))).toEqual(
      JSON.parse(fs.readFileSync(path.join(original, "config.json"), "utf8")),
    );
    expect(before.every(Number.isFinite)).toBe(true);
  });

  test("sharded save (index + shards) and bf16 save load back", async () => {
    const model = await Model.create(spec, 3, { device: "cpu" });
    const reference = await model.forward(ids, 2, 9);
    const sharded = path.join(tmp, `${family}-sharded`);
    await model.save(sharded, { maxShardBytes: 64 * 1024 });
    const index = JSON.parse(fs.readFileSync(path.join(sharded, "model.safetensors.index.json"), "utf8"));
    expect(new Set(Object.values(index.weight_map)).size).toBeGreaterThan(1);
    expect(fs.existsSync(path.join(sharded, "model.safetensors"))).toBe(false);
    const fromShards = await Model.load(sharded, { device: "cpu" });
    expect(maxAbsDiff(reference, await fromShards.forward(ids, 2, 9))).toBe(0);
    fromShards.dispose();

    const bf16 = path.join(tmp, `${family}-bf16`);
    await model.save(bf16, { dtype: "BF16" });
    expect(tensorTable(bf16).every((t) => t.includes(" BF16 "))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(bf16, "config.json"), "utf8")).torch_dtype).toBe("bfloat16");
    const fromBf16 = await Model.load(bf16, { device: "cpu" });
    // bf16 keeps 8 bits of mantissa: logits move, but only a little.
    expect(maxAbsDiff(reference, await fromBf16.forward(ids, 2, 9))).toBeLessThan(0.05);
    // ... and a bf16 checkpoint saved again keeps BF16 on disk.
    const bf16Again = path.join(tmp, `${family}-bf16-again`);
    await fromBf16.save(bf16Again);
    expect(tensorTable(bf16Again)).toEqual(tensorTable(bf16));
    fromBf16.dispose();
    model.dispose();
  });

  test("greedy generation equals step-by-step argmax over full forwards, and its log-probs match", async () => {
    const model = await Model.create(spec, 11, { device: "cpu" });
    const prompt = Int32Array.from([3, 14, 15, 92, 65]);
    const [[result]] = await model.generate([{ promptIds: prompt }], { temperature: 0, maxNewTokens: 12 });
    expect(result.tokens.length).toBe(12);
    expect(result.finishReason).toBe("length");
    // Along the generated tokens: each is the argmax of the full forward's logits after the tokens
    // before it, up to rounding (the cached and the full forward differ by ~1e-6, so a near-tie
    // may go either way).
    let sequence = Array.from(prompt);
    for (let step = 0; step < result.tokens.length; step++) {
      const logits = await model.forward(Int32Array.from(sequence), 1, sequence.length);
      const last = logits.subarray((sequence.length - 1) * spec.vocabSize, sequence.length * spec.vocabSize);
      let best = 0;
      for (let v = 1; v < last.length; v++) if (last[v] > last[best]) best = v;
      const token = result.tokens[step];
      expect(last[token]).toBeGreaterThanOrEqual(last[best] - 1e-4);
      const logSumExp = Math.log(last.reduce((s, x) => s + Math.exp(x - last[best]), 0)) + last[best];
      expect(Math.abs(result.logprobs[step] - (last[token] - logSumExp))).toBeLessThan(1e-4);
      sequence = [...sequence, token];
    }
    model.dispose();
  });

  test("left padding: a padded row gives the logits of the same row unpadded", async () => {
    const model = await Model.create(spec, 5, { device: "cpu" });
    const tokens = [7, 8, 9, 10, 11];
    const pad = 3;
    const alone = await model.forward(Int32Array.from(tokens), 1, tokens.length);
    const padded = await model.forward(Int32Array.from([0, 0, 0, ...tokens]), 1, tokens.length + pad, {
      attentionMask: Uint8Array.from([0, 0, 0, 1, 1, 1, 1, 1]),
      positions: Int32Array.from([0, 0, 0, 0, 1, 2, 3, 4]),
    });
    expect(maxAbsDiff(alone, padded.subarray(pad * spec.vocabSize))).toBeLessThan(1e-5);
    model.dispose();
  });
});

describe("sampling", () => {
  test("the same seed gives the same tokens; another seed gives others", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    const promptIds = Int32Array.from([1, 2, 3]);
    const params = { temperature: 1.0, topP: 0.95, maxNewTokens: 24 };
    const [[a], [b], [c]] = await model.generate([{ promptIds, seed: 42 }, { promptIds, seed: 42 }, { promptIds, seed: 43 }], params);
    expect(Array.from(a.tokens)).toEqual(Array.from(b.tokens));
    expect(Array.from(a.tokens)).not.toEqual(Array.from(c.tokens));
    model.dispose();
  });

  test("generation stops at an EOS id and says so", async () => {
    const model = await Model.create(TINY_SPECS.qwen2, 1, { device: "cpu" });
    const [[greedy]] = await model.generate([{ promptIds: Int32Array.from([4, 5]) }], { temperature: 0, maxNewTokens: 8 });
    const eos = greedy.tokens[2];
    const [[stopped]] = await model.generate([{ promptIds: Int32Array.from([4, 5]) }], { temperature: 0, maxNewTokens: 8, eosTokenIds: [eos] });
    expect(stopped.finishReason).toBe("eos");
    expect(Array.from(stopped.tokens)).toEqual(Array.from(greedy.tokens.subarray(0, greedy.tokens.indexOf(eos) + 1)));
    model.dispose();
  });

  test("bad requests are rejected with a message", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    await expect(model.generate([{ promptIds: new Int32Array(0) }])).rejects.toThrow(/empty prompt/);
    await expect(model.generate([{ promptIds: Int32Array.from([96]) }])).rejects.toThrow(/outside the model's vocabulary/);
    await expect(model.generate([{ promptIds: Int32Array.from([1]) }], { topP: 0 })).rejects.toThrow(/topP/);
    model.dispose();
  });
});

describe("handles", () => {
  test("heavy calls run off the JS thread: timers keep firing during a generate", async () => {
    const model = await Model.create({ ...TINY_SPECS.qwen3, hiddenSize: 256, intermediateSize: 768, numLayers: 4 }, 1, { device: "cpu" });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const start = Date.now();
    await model.generate([{ promptIds: Int32Array.from([1, 2, 3]) }], { temperature: 0, maxNewTokens: 200 });
    const elapsed = Date.now() - start;
    clearInterval(timer);
    model.dispose();
    // A blocked event loop would see no tick until the call returned.
    expect(elapsed).toBeGreaterThan(20);
    expect(ticks).toBeGreaterThan(elapsed / 20);
  });

  test("a disposed model refuses work with a clear error; calls in flight finish", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    const inFlight = model.forward(ids, 2, 9);
    model.dispose();
    expect((await inFlight).length).toBe(2 * 9 * 96);
    expect(model.handle.disposed).toBe(true);
    expect(() => model.forward(ids, 2, 9)).toThrow(/disposed/);
  });

  test("engine errors become JS errors with a short message and no C++ backtrace", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    const error = await model.handle.forward({ inputIds: Int32Array.from([1000]), batch: 1, length: 1 }).catch((e: Error) => e);
    // (Errors made by the addon belong to Node's main realm, not jest's sandbox: check the tag.)
    expect(Object.prototype.toString.call(error)).toBe("[object Error]");
    expect((error as Error).message).toMatch(/outside the model's vocabulary/);
    expect((error as Error).message).not.toMatch(/Exception raised from|frame #/);
    model.dispose();
  });

  test("native calls take one options object; a wrong option names its key", async () => {
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    const inputIds = Int32Array.from([1, 2]);
    expect(() => model.handle.forward({ inputIds, batch: "1" as unknown as number, length: 2 })).toThrow("options.batch must be a number");
    expect(() => model.handle.forward({ inputIds, batch: 1.5, length: 2 })).toThrow("options.batch must be an integer");
    const attentionMask = Uint8Array.from([1, 1]);
    expect(() => model.handle.sequenceLogprobs({ inputIds, batch: 1, length: 2, attentionMask, temperature: 1 } as never)).toThrow("options.chunkSize is required");
    model.dispose();
  });
});
