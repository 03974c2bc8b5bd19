// Run configuration: defaults from the schema, errors that name the key, --set overrides, YAML files.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { applyOverrides, ConfigError, loadConfig, parseConfig } from "../lib/rl/config";
import { loadDataset, resolveDatasetPath } from "../lib/rl/data";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-config-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test("an empty config takes every default", () => {
  const c = parseConfig({});
  expect(c.rollout.samplesPerPrompt).toBe(8);
  expect(c.loss.aggregation).toBe("token-mean");
  expect(c.method.octopus.separator).toBe("\n\n<self-correction>\n</self-correction>\n\n");
  expect(c.method.octopus.stage).toBe(1);
  expect(c.distributed.strategy).toBe("ddp");
  expect(c.lora).toBeUndefined();
  expect(parseConfig({ lora: { rank: 8 } }).lora).toEqual({ rank: 8, alpha: 16, dropout: 0, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] });
});

test.each([
  [{ rollout: { samplesPerPromt: 4 } }, /unknown key\(s\) 'rollout\.samplesPerPromt'/],
  [{ loss: { klCoef: "high" } }, /key 'loss\.klCoef': .*expected number/],
  [{ rollout: { temperature: -1 } }, /key 'rollout\.temperature'/],
  [{ method: { name: "ppo" } }, /key 'method\.name'/],
  [{ method: { octopus: { stage: 3 } } }, /key 'method\.octopus\.stage'/],
  [{ bogus: {} }, /unknown key\(s\) 'bogus'/],
  [{ distributed: { strategy: "zero3" } }, /key 'distributed\.strategy'/],
  [{ lora: { alpha: 16 } }, /key 'lora\.rank'/],
  [{ lora: { rank: 8, targetModules: ["lm_head"] } }, /key 'lora\.targetModules\.0'/],
])("bad config %j is rejected naming the key", (raw, message) => {
  expect(() => parseConfig(raw, "recipe.yaml")).toThrow(ConfigError);
  expect(() => parseConfig(raw, "recipe.yaml")).toThrow(message);
});

test("--set overrides parse YAML scalars and create sections", () => {
  const raw = applyOverrides({ loss: { klCoef: 0.1 } }, ["loss.klCoef=0.02", "model.path=/models/qwen", "training.activationCheckpointing=true"]);
  const c = parseConfig(raw);
  expect(c.loss.klCoef).toBe(0.02);
  expect(c.model.path).toBe("/models/qwen");
  expect(c.training.activationCheckpointing).toBe(true);
  expect(() => applyOverrides({}, ["noequals"])).toThrow(/expected key\.path=value/);
  expect(() => applyOverrides({ loss: 3 }, ["loss.klCoef=1"])).toThrow(/'loss' is not a section/);
});

test("YAML files: malformed, missing, and valid", () => {
  const bad = path.join(tmp, "bad.yaml");
  fs.writeFileSync(bad, "loss:\n  klCoef: [unclosed\n");
  expect(() => loadConfig(bad)).toThrow(/bad\.yaml: malformed YAML/);
  expect(() => loadConfig(path.join(tmp, "missing.yaml"))).toThrow(/cannot read config/);
  const good = path.join(tmp, "good.yaml");
  fs.writeFileSync(good, "rollout:\n  samplesPerPrompt: 4\nloss:\n  ratioLevel: sequence\n");
  const c = loadConfig(good, ["rollout.maxNewTokens=64"]);
  expect(c.rollout.samplesPerPrompt).toBe(4);
  expect(c.rollout.maxNewTokens).toBe(64);
  expect(c.loss.ratioLevel).toBe("sequence");
});

test("every shipped recipe parses, and every dataset it names is in the package (none reads outside it)", async () => {
  const configs = path.resolve(__dirname, "..", "configs");
  const recipes = fs.readdirSync(configs).filter((f) => f.endsWith(".yaml"));
  expect(recipes.length).toBeGreaterThan(10);
  const cwd = process.cwd();
  process.chdir(tmp); // from anywhere, not only from a clone's root
  try {
    for (const recipe of recipes) {
      const c = loadConfig(path.join(configs, recipe));
      for (const spec of [c.data.train, c.data.eval]) {
        if (!spec) continue;
        const examples = await loadDataset(spec);
        expect([recipe, examples.length > 0]).toEqual([recipe, true]);
        expect([recipe, path.relative(path.resolve(__dirname, ".."), resolveDatasetPath(spec.path)).startsWith("..")]).toEqual([recipe, false]);
      }
    }
  } finally {
    process.chdir(cwd);
  }
});
