/**
 * Bad input from users and library callers: paths that name a FIFO where a file belongs.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { demoTokenizerJson } from "../lib/demo/model";
import { configFromModelSpec } from "../lib/engine/model-config";
import { TINY_TIED_QWEN3 } from "./helpers/tiny-models";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bad-input-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("a FIFO where a file belongs is refused, naming it, instead of waiting for a writer forever", () => {
  /** Each case in a child process: were the refusal gone, its read would block the jest worker for good. */
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
