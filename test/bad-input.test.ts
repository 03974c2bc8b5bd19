/**
 * Bad input from users and library callers: keys that would reach Object.prototype (config,
 * datasets, model and tokenizer files, safetensors headers, judge replies, grade lines), paths
 * that name a FIFO where a file belongs, and misuse whose errors must name the file, key or value
 * and say what to do.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import { parquetWriteBuffer } from "hyparquet-writer";

import { demoTokenizerConfig, demoTokenizerJson } from "../lib/demo/model";
import { inspectCheckpoint, Model } from "../lib/engine/model";
import { configFromModelSpec } from "../lib/engine/model-config";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { checkGenerationFits } from "../lib/engine/sampling";
import { TextTokenizer } from "../lib/engine/tokenizer";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { gradeJsonl } from "../lib/grading/grade-file";
import { HttpJudge } from "../lib/methods/trust-grpo/judge/http-judge";
import { ConfigError, loadConfig } from "../lib/rl/config";
import { DatasetError, loadDataset } from "../lib/rl/data";
import { makeDirectory } from "../lib/util/files";
import { TINY_SPECS, TINY_TIED_QWEN3 } from "./helpers/tiny-models";

const CPU = { device: "cpu" };
const SCHEDULE = { lr: 1e-3, warmupSteps: 0, kind: "constant" } as const;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bad-input-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function write(name: string, content: string | Uint8Array): string {
  const file = path.join(tmp, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  return file;
}

/** A valid saved model (config.json + model.safetensors) to copy and break. */
let savedModel: string;
beforeAll(async () => {
  savedModel = path.join(tmp, "saved-model");
  const model = await Model.create(TINY_TIED_QWEN3, 3, CPU);
  await model.save(savedModel);
  model.dispose();
});

function supervised(tokens: number[]): TrainSequence {
  return { tokens: Int32Array.from(tokens), lossMask: tokens.map((_, t) => (t > 0 ? 1 : 0)) };
}

describe("keys from input never reach Object.prototype", () => {
  afterEach(() => {
    const polluted = ({} as Record<string, unknown>).polluted;
    delete (Object.prototype as Record<string, unknown>).polluted; // so one failure does not fail the rest
    expect(polluted).toBeUndefined();
  });

  test.each([
    ["__proto__.polluted=true", "__proto__"],
    ["run.__proto__.polluted=1", "__proto__"],
    ["constructor.prototype.polluted=1", "constructor"],
    ["run.constructor.prototype.polluted=1", "constructor"],
    ["run.prototype.polluted=1", "prototype"],
  ])("--set %s is refused before any object is touched", (override, key) => {
    expect(() => loadConfig(undefined, [override])).toThrow(ConfigError);
    expect(() => loadConfig(undefined, [override])).toThrow(`--set '${override}': '${key}' is not a config key`);
  });

  test.each([
    ["a top-level __proto__ section", "__proto__:\n  polluted: 1\n", "__proto__"],
    ["__proto__ inside a free-form map", "data:\n  chatTemplateVariables:\n    __proto__:\n      polluted: 1\n", "data.chatTemplateVariables.__proto__"],
    ["constructor inside a free-form map", "data:\n  chatTemplateVariables:\n    constructor:\n      prototype:\n        polluted: 1\n", "data.chatTemplateVariables.constructor"],
  ])("a YAML recipe with %s is refused naming the key", (_case, yaml, key) => {
    const file = write("proto-recipe.yaml", yaml);
    expect(() => loadConfig(file)).toThrow(`${file}: key '${key}' is not a config key`);
  });

  test("a --set value holding a __proto__ map is refused naming the key", () => {
    expect(() => loadConfig(undefined, ["data.chatTemplateVariables={__proto__: {polluted: 1}}"])).toThrow(
      "key 'data.chatTemplateVariables.__proto__' is not a config key",
    );
  });

  test("JSON and JSONL rows: a __proto__ key stays an ordinary key of its row", async () => {
    const row = '{"__proto__": {"polluted": true, "problem": "from the prototype"}, "problem": "1+1", "answer": "2"}';
    for (const file of [write("proto.jsonl", row + "\n"), write("proto.json", `[${row}]`)]) {
      const [example] = await loadDataset({ path: file });
      expect(example).toMatchObject({ problem: "1+1", answer: "2" });
    }
  });

  test("parquet: a column named __proto__ (which would become the row's prototype) is refused", async () => {
    const buffer = parquetWriteBuffer({
      columnData: [
        { name: "__proto__", data: [{ polluted: true, problem: "from the prototype" }], type: "JSON" },
        { name: "answer", data: ["2"], type: "STRING" },
      ],
    });
    const file = write("proto.parquet", new Uint8Array(buffer));
    const error = await loadDataset({ path: file }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatasetError);
    expect((error as Error).message).toBe(`${file}: has a column named '__proto__', which cannot be a field of a row; rename or drop it`);
  });

  test("config.json and tokenizer_config.json with __proto__ keys load as if the key were absent", () => {
    const dir = path.join(tmp, "proto-model");
    fs.cpSync(savedModel, dir, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
    const text = JSON.stringify(config).replace("{", '{"__proto__": {"polluted": true, "vocab_size": 5},');
    fs.writeFileSync(path.join(dir, "config.json"), text);
    expect(inspectCheckpoint(dir).spec).toEqual(inspectCheckpoint(savedModel).spec);

    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(demoTokenizerJson()));
    const tokenizerConfig = JSON.stringify(demoTokenizerConfig()).replace("{", '{"__proto__": {"polluted": true, "eos_token": "<|unk|>"},');
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), tokenizerConfig);
    const tokenizer = TextTokenizer.fromDir(dir);
    expect(tokenizer.eosTokenIds[0]).toBe(tokenizer.tokenToId("<|im_end|>"));
  });

  test("safetensors headers: a tensor or metadata key named __proto__ is an ordinary name", () => {
    const json = Buffer.from('{"__metadata__":{"__proto__":"x"},"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    const header = readSafetensorsHeader(write("proto.safetensors", Buffer.concat([length, json, Buffer.alloc(4)])));
    expect(header.tensors.map((t) => t.name)).toEqual(["__proto__"]);
    expect(Object.keys(header.metadata)).toEqual(["__proto__"]);
  });

  test("a judge reply with __proto__ keys: only its own choices are read", async () => {
    const bodies = [
      '{"__proto__": {"polluted": true}, "choices": [{"message": {"content": "Score: 0.5"}}]}',
      '{"__proto__": {"choices": [{"message": {"content": "Score: 1"}}]}}',
    ];
    let call = 0;
    const server = http.createServer((_req, res) => res.end(bodies[call++]));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const judge = new HttpJudge({
        baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, model: "stub", promptTemplate: "{problem} {response}",
        maxTokens: 8, timeoutMs: 5000, retries: 0, backoffMs: 0, concurrency: 1, fallbackScore: 0,
      });
      expect((await judge.score([{ problem: "p", response: "r" }]))[0]).toMatchObject({ score: 0.5, parsed: true });
      await expect(judge.score([{ problem: "p", response: "r" }])).rejects.toThrow(/no choices\[0\]\.message\.content/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test("grade lines with __proto__ keys: gold and pred are read from the line itself", async () => {
    const input = write("proto-grade.jsonl", '{"gold": "2", "pred": "2", "__proto__": {"polluted": true}}\n');
    const output = path.join(tmp, "proto-graded.jsonl");
    expect(await gradeJsonl(input, output)).toEqual({ total: 1, correct: 1, timedOut: 0 });
    expect(JSON.parse(fs.readFileSync(output, "utf8"))).toMatchObject({ gold: "2", correct: true });
    const onlyInherited = write("proto-grade-2.jsonl", '{"__proto__": {"gold": "2", "pred": "2"}}\n');
    await expect(gradeJsonl(onlyInherited, output)).rejects.toThrow(/proto-grade-2\.jsonl:1: missing or non-string "gold" and "pred"/);
  });
});

describe("a FIFO where a file belongs is refused, naming it, instead of waiting for a writer forever", () => {
  /**
   * Each case in a child process running the compiled dist/ (npm test builds it first): were the
   * refusal gone, its read would block the jest worker for good.
   */
  const script = `
    const dist = ${JSON.stringify(path.join(__dirname, "..", "dist", "lib"))};
    const lib = require(dist);
    const { gradeJsonl } = require(dist + "/grading/grade-file.js");
    const { parseMetricsFile } = require(dist + "/report/run-data.js");
    const calls = {
      model: (p) => lib.Model.load(p, { device: "cpu" }),
      tokenizer: (p) => lib.TextTokenizer.fromDir(p),
      dataset: (p) => lib.loadDataset({ path: p }),
      config: (p) => lib.loadConfig(p),
      optimizerState: (p) => lib.readSafetensorsHeader(p),
      grade: (p) => gradeJsonl(p),
      metrics: (p) => parseMetricsFile(p),
    };
    (async () => {
      const out = {};
      for (const [name, kind, target] of JSON.parse(process.argv[1]))
        out[name] = await Promise.resolve().then(() => calls[kind](target)).then(() => "no error", (e) => e.name + ": " + e.message);
      console.log(JSON.stringify(out));
    })();`;

  test("model, tokenizer, dataset, recipe, optimizer state, grade input and metrics files", () => {
    const root = path.join(tmp, "fifo");
    const fifo = (file: string): string | undefined => {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const made = spawnSync("mkfifo", [file], { encoding: "utf8" });
      return made.status === 0 ? undefined : made.error?.message ?? made.stderr;
    };
    const unavailable = fifo(path.join(root, "probe"));
    if (unavailable !== undefined) {
      console.log(`skipped: mkfifo is unavailable here (${unavailable.trim()})`);
      return;
    }
    const modelDir = (name: string, files: Record<string, string>) => {
      const dir = path.join(root, name);
      fs.mkdirSync(dir, { recursive: true });
      for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
      return dir;
    };
    const config = JSON.stringify(configFromModelSpec(TINY_TIED_QWEN3));
    const tokenizer = JSON.stringify(demoTokenizerJson());
    const cases: [string, string, string, string][] = [
      // [case, kind, the path given, the FIFO inside it]
      ["model.safetensors", "model", modelDir("weights", { "config.json": config }), "model.safetensors"],
      ["config.json", "model", modelDir("config", {}), "config.json"],
      ["model.safetensors.index.json", "model", modelDir("index", { "config.json": config }), "model.safetensors.index.json"],
      ["tokenizer.json", "tokenizer", modelDir("tokenizer", {}), "tokenizer.json"],
      ["tokenizer_config.json", "tokenizer", modelDir("tokenizer-config", { "tokenizer.json": tokenizer }), "tokenizer_config.json"],
      ["chat_template.jinja", "tokenizer", modelDir("template", { "tokenizer.json": tokenizer, "tokenizer_config.json": "{}" }), "chat_template.jinja"],
      ["a .jsonl dataset", "dataset", path.join(root, "data.jsonl"), ""],
      ["a .json dataset", "dataset", path.join(root, "data.json"), ""],
      ["a .parquet dataset", "dataset", path.join(root, "data.parquet"), ""],
      ["a YAML recipe", "config", path.join(root, "recipe.yaml"), ""],
      ["an optimizer state", "optimizerState", path.join(root, "optimizer.safetensors"), ""],
      ["a grade input", "grade", path.join(root, "answers.jsonl"), ""],
      ["a metrics.jsonl", "metrics", path.join(root, "metrics.jsonl"), ""],
    ];
    for (const [, , target, inside] of cases) expect(fifo(path.join(target, inside))).toBeUndefined();

    // Generous: the child loads the engine (about a second); a read of a FIFO waits forever.
    const child = spawnSync(process.execPath, ["-e", script, JSON.stringify(cases.map(([name, kind, target]) => [name, kind, target]))], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect({ signal: child.signal, stderr: child.stderr }).toEqual({ signal: null, stderr: "" });
    const messages = JSON.parse(child.stdout) as Record<string, string>;
    for (const [name, , target, inside] of cases) {
      expect([name, messages[name]]).toEqual([name, expect.stringContaining(path.join(target, inside))]);
      expect([name, messages[name]]).toEqual([name, expect.stringContaining("is a FIFO (named pipe), not a regular file; give the path of the file itself")]);
    }
  });
});

describe("errors that name the file, key or value and say what to do", () => {
  let model: Model;
  beforeAll(async () => {
    model = await Model.create(TINY_SPECS.qwen3, 1, CPU);
  });
  afterAll(() => model.dispose());

  test.each([
    ["a null JSONL line", "null-row.jsonl", '{"problem": "a", "answer": "1"}\nnull\n', /null-row\.jsonl:2: the line is null; each line must be an object like \{"problem"/],
    ["a JSONL line that is an array", "array-row.jsonl", "[1, 2]\n", /array-row\.jsonl:1: the line is an array/],
    ["a broken .json file", "broken.json", '[{"problem": "a"', /broken\.json: not valid JSON \(.*\); a \.json dataset is one array of objects \(for one object per line, name it \.jsonl\)/],
    ["a null element of a .json array", "null-element.json", '[{"problem": "a", "answer": "1"}, null]', /null-element\.json: element 1 of the array is null/],
  ])("%s", async (_case, name, content, message) => {
    const error = await loadDataset({ path: write(name, content) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatasetError);
    expect((error as Error).message).toMatch(message);
  });

  test("a --set value that is not valid YAML names the --set and how to quote a string", () => {
    expect(() => loadConfig(undefined, ["run.steps=[1,2"])).toThrow(
      /^--set 'run\.steps=\[1,2': the value is not valid YAML \(Flow sequence must end with a \].*\); quote a string/,
    );
  });

  test("a token id outside the vocabulary names the sequence, the position and the vocabulary size", async () => {
    const trainer = new PolicyTrainer(model, { schedule: SCHEDULE });
    const vocab = TINY_SPECS.qwen3.vocabSize;
    const expected = `sequence 1: token id ${vocab} at position 2 is outside the model's vocabulary [0, ${vocab}); were the tokens made by another model's tokenizer?`;
    await expect(trainer.trainStep([supervised([1, 2, 3]), supervised([1, 2, vocab])], { objective: "supervised" })).rejects.toThrow(expected);
    await expect(PolicyTrainer.logprobs(model, [Int32Array.from([1]), Int32Array.from([1, -1])])).rejects.toThrow(
      `sequence 1: token id -1 at position 1 is outside the model's vocabulary [0, ${vocab})`,
    );
  });

  test("microBatchSize 0 is refused naming the key: in the config, the trainer and the log-prob call", async () => {
    expect(() => loadConfig(undefined, ["training.microBatchSize=0"])).toThrow(/key 'training\.microBatchSize'/);
    const message = "microBatchSize must be a positive integer (sequences per micro-batch), not 0";
    expect(() => new PolicyTrainer(model, { schedule: SCHEDULE, microBatchSize: 0 })).toThrow(message);
    // 0 there never advanced through the sequences: the call spun forever.
    await expect(PolicyTrainer.logprobs(model, [Int32Array.from([1, 2])], { microBatchSize: 0 })).rejects.toThrow(message);
  });

  test("requests that are not an array, or not objects, are named", async () => {
    await expect(model.generate({ promptIds: Int32Array.from([1]) } as never)).rejects.toThrow(
      "generate: requests must be an array of {promptIds, n?, seed?}, not object",
    );
    await expect(model.generate([null] as never)).rejects.toThrow("request 0 must be an object {promptIds, n?, seed?}, not null");
  });

  test("n = 1e9 and maxNewTokens = 1e9 are refused before the engine allocates, saying what fits", async () => {
    const prompt = Int32Array.from([1, 2, 3]);
    // 1e9 rows: terabytes of KV cache, and more tokens than one call can index, whatever the memory.
    await expect(model.generate([{ promptIds: prompt, n: 1e9 }], { maxNewTokens: 4 })).rejects.toThrow(
      /^generate: 1000000000 rows \(n summed over the requests\) × maxNewTokens 4 .*(at most \d+ rows fit|at most \d+ rows can be returned).*lower n/i,
    );
    // 3 rows × 1e9 slots: 3 TB of KV cache for this model, and again more tokens than one call can index.
    await expect(model.generate([{ promptIds: prompt, n: 3 }], { maxNewTokens: 1e9 })).rejects.toThrow(
      /^generate: 3 rows \(n summed over the requests\) × maxNewTokens 1000000000 .*lower n/i,
    );
  });

  test("what fits: the rows and maxNewTokens the refusal names do fit, one more does not", () => {
    const spec = TINY_SPECS.qwen3;
    const shape = { rows: 64, longestPrompt: 100, maxNewTokens: 4096, kvCache: true };
    const available = 2 ** 27; // 128 MiB
    let message = "";
    try {
      checkGenerationFits(spec, "Float", shape, available);
    } catch (error) {
      message = (error as Error).message;
    }
    const [, maxRows] = /at most (\d+) rows? fit/.exec(message)!.map(Number);
    const [, maxNew] = /maxNewTokens up to (\d+)/.exec(message)!.map(Number);
    expect(message).toMatch(/needs at least [\d.]+ GiB for the KV cache and sampling state, but 0\.125 GiB of memory is available/);
    expect(() => checkGenerationFits(spec, "Float", { ...shape, rows: maxRows }, available)).not.toThrow();
    expect(() => checkGenerationFits(spec, "Float", { ...shape, rows: maxRows + 1 }, available)).toThrow(RangeError);
    expect(() => checkGenerationFits(spec, "Float", { ...shape, maxNewTokens: maxNew }, available)).not.toThrow();
    expect(() => checkGenerationFits(spec, "Float", { ...shape, maxNewTokens: maxNew + 1 }, available)).toThrow(RangeError);
    // bf16 halves the cache: more fits.
    expect(() => checkGenerationFits(spec, "BFloat16", { ...shape, rows: maxRows + 1 }, available)).not.toThrow();
  });

  test("a disposed model's trainer refuses to train or save, like the model's own calls", async () => {
    const disposable = await Model.create(TINY_TIED_QWEN3, 2, CPU);
    const trainer = new PolicyTrainer(disposable, { schedule: SCHEDULE });
    const inFlight = trainer.trainStep([supervised([1, 2, 3])], { objective: "supervised" });
    disposable.dispose();
    expect((await inFlight).step).toBe(1); // a call already made finishes
    const message = "this model was disposed; load it again and make a new PolicyTrainer";
    expect(() => trainer.trainStep([supervised([1, 2, 3])], { objective: "supervised" })).toThrow(message);
    expect(() => trainer.saveState(path.join(tmp, "never.safetensors"))).toThrow(message);
    expect(trainer.step).toBe(1);
  });

  test("a directory that cannot be created: the path, the cause (read-only, not a directory)", () => {
    const file = write("plain-file", "");
    const below = path.join(file, "run");
    expect(() => makeDirectory(below, "the run directory")).toThrow(`${below}: cannot create the run directory: a part of its path is a file, not a directory (ENOTDIR)`);
    expect(() => makeDirectory(file, "the run directory")).toThrow(`${file}: cannot create the run directory: it exists and is not a directory (EEXIST)`);

    // Root ignores permission bits, so a read-only file system is the one refusal that holds for every user.
    const readOnly = path.join(tmp, "read-only");
    fs.mkdirSync(readOnly);
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", readOnly], { encoding: "utf8" });
    if (mounted.status !== 0) {
      console.log(`read-only case skipped: cannot mount a read-only tmpfs here (${(mounted.error?.message ?? mounted.stderr).trim()})`);
      return;
    }
    try {
      for (const dir of [path.join(readOnly, "run"), path.join(readOnly, "runs", "a", "b")]) {
        // Node's own recursive mkdir says "ENOENT: no such file or directory" here.
        const error = (() => {
          try {
            makeDirectory(dir, "the run directory");
          } catch (e) {
            return e as NodeJS.ErrnoException;
          }
        })();
        expect(error?.code).toBe("EROFS");
        expect(error?.message).toBe(`${readOnly}: cannot create the run directory ${dir} in it (EROFS: the filesystem is read-only)`);
      }
      // The train command takes its run directory through it.
      const cli = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
      const train = spawnSync(process.execPath, [cli, "train", "--config", path.join(__dirname, "..", "configs", "demo.yaml"), "--set", `run.dir=${readOnly}/run`], { encoding: "utf8" });
      expect(train.status).toBe(1);
      expect(train.stderr).toContain(`${readOnly}: cannot create the run directory ${readOnly}/run in it (EROFS: the filesystem is read-only)`);
    } finally {
      spawnSync("umount", [readOnly]);
    }
  });
});
