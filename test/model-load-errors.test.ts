/**
 * Model.load on broken model directories: every problem is reported before any byte is read,
 * as a ModelLoadError / ModelConfigError / SafetensorsError naming the file or directory and
 * the tensor or config key concerned. Plus the tolerated extras (rotary inv_freq, tied lm_head).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { ModelLoadError, Model } from "../lib/engine/model";
import { configFromModelSpec, ModelConfigError } from "../lib/engine/model-config";
import { buildSafetensorsHeader, SafetensorsError } from "../lib/engine/safetensors";
import { native, type ModelSpec, type ParameterShape } from "../lib/native";
import { TINY_TIED_QWEN3 } from "./helpers/tiny-models";

const SPEC: ModelSpec = TINY_TIED_QWEN3;
const CPU = { device: "cpu" };

const dirs: string[] = [];
let expected: ParameterShape[];
/** A valid model saved by the engine, copied into each directory that needs one. */
let savedModel: string;

function tempDir(tag: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `octo-load-${tag}-`));
  dirs.push(dir);
  return dir;
}

beforeAll(async () => {
  expected = native().expectedParameters(SPEC);
  savedModel = path.join(tempDir("saved"), "model");
  const model = await Model.create(SPEC, 3, CPU);
  await model.save(savedModel);
  model.dispose();
});

afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

function copyOfSaved(tag: string): string {
  const dir = path.join(tempDir(tag), "model");
  fs.cpSync(savedModel, dir, { recursive: true });
  return dir;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
}

interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
  /** raw little-endian bytes; zeros when absent */
  data?: Buffer;
}

const ITEM_BYTES: Record<string, number> = { F32: 4, BF16: 2, F16: 2, I32: 4, F64: 8 };

/** Writes a safetensors file: buildSafetensorsHeader + each tensor's bytes back to back. */
function writeWeights(file: string, tensors: TensorSpec[]): void {
  const header = buildSafetensorsHeader(tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })));
  const chunks = tensors.map((t) => {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * ITEM_BYTES[t.dtype];
    if (t.data) {
      expect(t.data.length).toBe(bytes);
      return t.data;
    }
    return Buffer.alloc(bytes);
  });
  fs.writeFileSync(file, Buffer.concat([header, ...chunks]));
}

/** The expected parameters as F32 zero tensors, adjusted by `edit`. */
function parameters(edit: (list: TensorSpec[]) => TensorSpec[] = (l) => l): TensorSpec[] {
  return edit(expected.map((p) => ({ name: p.name, dtype: "F32", shape: [...p.shape] })));
}

/** A directory with the tiny model's config.json and the given tensors in model.safetensors. */
function modelDir(tag: string, tensors: TensorSpec[], config: Record<string, unknown> = configFromModelSpec(SPEC)): string {
  const dir = tempDir(tag);
  writeJson(path.join(dir, "config.json"), config);
  writeWeights(path.join(dir, "model.safetensors"), tensors);
  return dir;
}

type ErrorClass = typeof ModelLoadError | typeof ModelConfigError | typeof SafetensorsError;

/** Model.load(dir) must reject with an instance of `cls` whose message contains every fragment. */
async function expectLoadError(dir: string, cls: ErrorClass, fragments: string[], pattern?: RegExp): Promise<Error> {
  let error: unknown;
  try {
    const model = await Model.load(dir, CPU);
    model.dispose();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(cls);
  const message = (error as Error).message;
  for (const fragment of fragments) expect(message).toContain(fragment);
  if (pattern) expect(message).toMatch(pattern);
  return error as Error;
}

function randomF32(count: number, seed: number): Buffer {
  // Deterministic, distinct values per tensor so that a wrong offset shows up.
  const out = Buffer.alloc(count * 4);
  let x = seed >>> 0;
  for (let i = 0; i < count; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out.writeFloatLE(((x >>> 8) / 2 ** 24 - 0.5) * 0.1, 4 * i);
  }
  return out;
}

describe("directory and config.json problems", () => {
  test("directory does not exist", async () => {
    const dir = path.join(tempDir("absent"), "no-such-model");
    await expectLoadError(dir, ModelLoadError, [dir], /does not exist/);
  });

  test("a file instead of a directory", async () => {
    const file = path.join(tempDir("file"), "config.json");
    fs.writeFileSync(file, "{}");
    await expectLoadError(file, ModelLoadError, [file], /does not exist/);
  });

  test("directory without config.json", async () => {
    const dir = tempDir("noconfig");
    writeWeights(path.join(dir, "model.safetensors"), parameters());
    await expectLoadError(dir, ModelLoadError, [dir, "config.json"]);
  });

  test("config.json that is not JSON", async () => {
    const dir = tempDir("badjson");
    fs.writeFileSync(path.join(dir, "config.json"), '{"architectures": ["Qwen3ForCausalLM"],');
    await expectLoadError(dir, ModelLoadError, [path.join(dir, "config.json")], /not valid JSON/);
  });

  test("config with an unsupported architecture", async () => {
    const dir = modelDir("gpt2", parameters(), { ...configFromModelSpec(SPEC), architectures: ["GPT2LMHeadModel"] });
    await expectLoadError(dir, ModelConfigError, [path.join(dir, "config.json"), "GPT2LMHeadModel"], /not supported/);
  });

  test("config with a wrong type names the key", async () => {
    const dir = modelDir("wrongtype", parameters(), { ...configFromModelSpec(SPEC), hidden_size: "64" });
    await expectLoadError(dir, ModelConfigError, [path.join(dir, "config.json"), "'hidden_size'"]);
  });

  test("config without a required key names the key", async () => {
    const config = configFromModelSpec(SPEC);
    delete config.num_hidden_layers;
    const dir = modelDir("nokey", parameters(), config);
    await expectLoadError(dir, ModelConfigError, [path.join(dir, "config.json"), "'num_hidden_layers'"]);
  });

  test("config with rope_scaling rope_type yarn", async () => {
    const dir = modelDir("yarn", parameters(), {
      ...configFromModelSpec(SPEC),
      rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 4096 },
    });
    await expectLoadError(dir, ModelConfigError, [path.join(dir, "config.json"), "rope_scaling.rope_type", "yarn"]);
  });

  test("directory with only pytorch_model.bin: pickle is never loaded", async () => {
    const dir = tempDir("pickle");
    writeJson(path.join(dir, "config.json"), configFromModelSpec(SPEC));
    fs.writeFileSync(path.join(dir, "pytorch_model.bin"), Buffer.from("PK\x03\x04 not really a zip"));
    await expectLoadError(dir, ModelLoadError, [dir, "pytorch_model.bin"], /never loads pickle/);
  });

  test("directory with config.json but no weights", async () => {
    const dir = tempDir("noweights");
    writeJson(path.join(dir, "config.json"), configFromModelSpec(SPEC));
    await expectLoadError(dir, ModelLoadError, [dir, "model.safetensors", "model.safetensors.index.json"]);
  });
});

describe("weights that do not match the config", () => {
  test("a tensor missing from model.safetensors", async () => {
    const missing = "model.layers.0.mlp.up_proj.weight";
    const dir = modelDir("missing", parameters((l) => l.filter((t) => t.name !== missing)));
    await expectLoadError(dir, ModelLoadError, [dir, `'${missing}'`], /is missing/);
  });

  test("a tensor with a wrong shape", async () => {
    const name = "model.layers.0.self_attn.o_proj.weight";
    const dir = modelDir("shape", parameters((l) => l.map((t) => (t.name === name ? { ...t, shape: [32, 16] } : t))));
    await expectLoadError(dir, ModelLoadError, [path.join(dir, "model.safetensors"), `'${name}'`, "[32,16]", "[32,32]"]);
  });

  test("an unexpected extra tensor", async () => {
    const extra = "model.layers.0.mlp.extra_proj.weight";
    const dir = modelDir("extra", parameters((l) => [...l, { name: extra, dtype: "F32", shape: [4] }]));
    await expectLoadError(dir, ModelLoadError, [path.join(dir, "model.safetensors"), `'${extra}'`], /unexpected tensor/);
  });

  test("an untied model with an unexpected lm_head.bias is rejected", async () => {
    // Untied: lm_head.weight is expected and present; lm_head.bias is not part of the model.
    const untied: ModelSpec = { ...SPEC, tieWordEmbeddings: false };
    const names = native().expectedParameters(untied);
    expect(names.map((p) => p.name)).toContain("lm_head.weight");
    const tensors: TensorSpec[] = names.map((p) => ({ name: p.name, dtype: "F32", shape: p.shape }));
    tensors.push({ name: "lm_head.bias", dtype: "F32", shape: [64] });
    const dir = modelDir("untied", tensors, configFromModelSpec(untied));
    await expectLoadError(dir, ModelLoadError, [path.join(dir, "model.safetensors"), "'lm_head.bias'"]);
  });

  test("a parameter stored as I32", async () => {
    const name = "model.norm.weight";
    const dir = modelDir("int", parameters((l) => l.map((t) => (t.name === name ? { ...t, dtype: "I32" } : t))));
    await expectLoadError(dir, ModelLoadError, [path.join(dir, "model.safetensors"), `'${name}'`, "I32"]);
  });

  test("a corrupt model.safetensors surfaces as a SafetensorsError naming it", async () => {
    const dir = modelDir("corrupt", parameters());
    const file = path.join(dir, "model.safetensors");
    fs.truncateSync(file, fs.statSync(file).size - 1);
    await expectLoadError(dir, SafetensorsError, [file, "'model.norm.weight'"], /truncated/);
  });

  test("config.json that disagrees with the weights (hidden_size changed after saving)", async () => {
    const dir = copyOfSaved("disagree");
    const configPath = path.join(dir, "config.json");
    const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
    expect(config.hidden_size).toBe(32);
    writeJson(configPath, { ...config, hidden_size: 64 });
    await expectLoadError(
      dir,
      ModelLoadError,
      [path.join(dir, "model.safetensors"), "'model.embed_tokens.weight'", "[64,32]", "[64,64]"],
      /does config.json belong to these weights/,
    );
  });

  test("config.json with one layer more than the weights hold", async () => {
    const dir = copyOfSaved("layers");
    const configPath = path.join(dir, "config.json");
    writeJson(configPath, { ...JSON.parse(fs.readFileSync(configPath, "utf8")), num_hidden_layers: 2 });
    await expectLoadError(dir, ModelLoadError, [dir, "'model.layers.1."], /is missing/);
  });
});

describe("sharded checkpoints", () => {
  async function shardedDir(tag: string): Promise<{ dir: string; shards: string[]; index: string }> {
    const dir = path.join(tempDir(tag), "model");
    const model = await Model.create(SPEC, 5, CPU);
    await model.save(dir, { maxShardBytes: 16 * 1024 });
    model.dispose();
    const shards = fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort();
    expect(shards.length).toBeGreaterThan(1);
    return { dir, shards, index: path.join(dir, "model.safetensors.index.json") };
  }

  test("the sharded save loads (control)", async () => {
    const { dir } = await shardedDir("sharded-ok");
    const model = await Model.load(dir, CPU);
    expect(model.handle.parameters().map((p) => p.name)).toEqual(expected.map((p) => p.name));
    model.dispose();
  });

  test.each(["..", ".", "", "model.bin"])("an index whose weight_map names %j is rejected naming the index", async (bad) => {
    const dir = copyOfSaved("bad-shard-name");
    fs.renameSync(path.join(dir, "model.safetensors"), path.join(dir, "model-00001-of-00001.safetensors"));
    const weightMap = Object.fromEntries(expected.map((p) => [p.name, "model-00001-of-00001.safetensors"]));
    weightMap[expected[0].name] = bad;
    writeJson(path.join(dir, "model.safetensors.index.json"), { metadata: {}, weight_map: weightMap });
    const error = await Model.load(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelLoadError);
    expect((error as Error).message).toContain("model.safetensors.index.json");
    expect((error as Error).message).toContain(JSON.stringify(bad));
  });

  test("an index that names a missing shard", async () => {
    const { dir, shards, index } = await shardedDir("sharded-missing");
    fs.rmSync(path.join(dir, shards[1]));
    await expectLoadError(dir, ModelLoadError, [index, `'${shards[1]}'`], /missing/);
  });

  test("a tensor present in two shards", async () => {
    const { dir, shards, index } = await shardedDir("sharded-dup");
    const name = "model.norm.weight";
    const weightMap = JSON.parse(fs.readFileSync(index, "utf8")).weight_map as Record<string, string>;
    const home = weightMap[name];
    expect(home).toBeDefined();
    // An extra shard holding a second copy of model.norm.weight, named by the index.
    writeWeights(path.join(dir, "model-extra.safetensors"), [{ name, dtype: "F32", shape: [32] }]);
    writeJson(index, { metadata: {}, weight_map: { ...weightMap, "model.norm.weight.copy": "model-extra.safetensors" } });
    await expectLoadError(dir, ModelLoadError, [`'${name}'`, path.join(dir, home), path.join(dir, "model-extra.safetensors")], /appears in both/);
    expect(shards).toContain(home);
  });

  test("an index whose weight_map points outside the directory", async () => {
    const { dir, index } = await shardedDir("sharded-escape");
    const weightMap = JSON.parse(fs.readFileSync(index, "utf8")).weight_map as Record<string, string>;
    writeJson(index, { weight_map: { ...weightMap, "model.norm.weight": "../elsewhere.safetensors" } });
    await expectLoadError(dir, ModelLoadError, [index, "weight_map"]);
  });

  test("an index without weight_map", async () => {
    const { dir, index } = await shardedDir("sharded-nomap");
    writeJson(index, { metadata: {} });
    await expectLoadError(dir, ModelLoadError, [index, "'weight_map'"]);
  });
});

describe("tolerated extras load, with every tensor read from the right offset", () => {
  /** Checks the model holds exactly `tensors` (by saving it and comparing the bytes). */
  async function expectWeights(model: Model, tensors: TensorSpec[]): Promise<void> {
    expect(model.handle.parameters().map((p) => p.name)).toEqual(expected.map((p) => p.name));
    const out = path.join(tempDir("resaved"), "model");
    await model.save(out, { dtype: "F32" });
    const bytes = fs.readFileSync(path.join(out, "model.safetensors"));
    const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, headerEnd).toString("utf8")) as Record<string, { data_offsets: [number, number] }>;
    expect(Object.keys(header).filter((k) => k !== "__metadata__").sort()).toEqual(expected.map((p) => p.name).sort());
    for (const t of tensors) {
      if (!(t.name in header)) continue; // the tolerated extras are not saved back
      const [begin, end] = header[t.name].data_offsets;
      expect({ name: t.name, equal: bytes.subarray(headerEnd + begin, headerEnd + end).equals(t.data!) }).toEqual({ name: t.name, equal: true });
    }
    const logits = await model.forward(Int32Array.from([1, 2, 3]), 1, 3);
    expect(logits.length).toBe(3 * SPEC.vocabSize);
    expect(logits.every(Number.isFinite)).toBe(true);
  }

  function withData(list: TensorSpec[]): TensorSpec[] {
    return list.map((t, i) => ({ ...t, data: t.data ?? randomF32(t.shape.reduce((a, b) => a * b, 1), 1000 + i) }));
  }

  test("a checkpoint carrying model.layers.0.self_attn.rotary_emb.inv_freq loads", async () => {
    const invFreq: TensorSpec = { name: "model.layers.0.self_attn.rotary_emb.inv_freq", dtype: "F32", shape: [8] };
    // In the middle of the file, so every later tensor sits at a shifted offset.
    const tensors = withData(parameters((l) => [...l.slice(0, 3), invFreq, ...l.slice(3)]));
    const dir = modelDir("invfreq", tensors);
    const model = await Model.load(dir, CPU);
    try {
      await expectWeights(model, tensors);
    } finally {
      model.dispose();
    }
  });

  test("a tied model whose file also carries lm_head.weight loads", async () => {
    const lmHead: TensorSpec = { name: "lm_head.weight", dtype: "F32", shape: [SPEC.vocabSize, SPEC.hiddenSize] };
    const tensors = withData(parameters((l) => [lmHead, ...l]));
    const dir = modelDir("tiedhead", tensors);
    const model = await Model.load(dir, CPU);
    try {
      expect(model.spec.tieWordEmbeddings).toBe(true);
      await expectWeights(model, tensors);
    } finally {
      model.dispose();
    }
  });
});
