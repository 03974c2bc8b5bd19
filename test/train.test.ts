// The RL loop end to end on the built-in model (random weights): metrics, checkpoints,
// bit-exact resume, and the errors a user meets first.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { loadConfig, parseConfig } from "../lib/config";
import { arithmeticProblems, sampleSolution, writeSolution } from "../lib/demo/arithmetic";
import { ensureDemoModel } from "../lib/demo-model";
import { DEFAULT_SEPARATOR } from "../lib/methods/octopus";
import { Model } from "../lib/model";
import { seededRandom } from "../lib/random";
import { runSft } from "../lib/sft";
import { TextTokenizer } from "../lib/tokenizer";
import { runTraining } from "../lib/train";
import { readSafetensorsHeader } from "../lib/safetensors";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-train-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let modelDir = "";
beforeAll(async () => {
  // A short cold start, so rollouts carry the format and rewards differ within groups (with
  // random weights every reward is equal, advantages are 0, and a resume bug could hide).
  const base = await ensureDemoModel(path.join(tmp, "demo-model"), 5);
  const model = await Model.load(base, { device: "cpu" });
  const tokenizer = TextTokenizer.fromDir(base);
  const random = seededRandom(1);
  const items = arithmeticProblems(200, 4).map((example) => ({ example, o1: sampleSolution(example.problem, 0.5, random), o2: writeSolution(example.problem) }));
  await runSft(model, tokenizer, items, { prompt: { template: "{problem}=", chat: false }, separator: DEFAULT_SEPARATOR, steps: 40, batchSize: 16, lr: 3e-3, maxResponseTokens: 96, seed: 2 });
  modelDir = path.join(tmp, "cold-start");
  await model.save(modelDir);
  model.dispose();
});

const examples = arithmeticProblems(40, 11);

function config(runDir: string, overrides: string[] = []) {
  return loadConfig(path.join(__dirname, "..", "configs", "demo.yaml"), [
    `model.path=${modelDir}`, `run.dir=${runDir}`, "run.steps=3", "rollout.promptsPerStep=2", "rollout.samplesPerPrompt=4",
    "rollout.maxNewTokens=96", "optimizer.lr=0.01", "optimizer.warmupSteps=1", "optimizer.schedule=cosine", ...overrides,
  ]);
}

const withoutTimes = (line: string) => {
  const m = JSON.parse(line);
  delete m.seconds;
  delete m.generationTokensPerSecond;
  return m;
};

test("N steps straight equal k steps, stop, resume, N-k steps (weights, optimizer state, metrics)", async () => {
  const straight = path.join(tmp, "straight");
  const a = await runTraining(config(straight), { examples, quiet: true });
  expect(a.steps).toBe(3);

  const resumed = path.join(tmp, "resumed");
  const first = await runTraining(config(resumed), { examples, quiet: true, stopAfterSteps: 1 });
  expect(first.interrupted).toBe(true);
  expect(first.steps).toBe(1);
  const b = await runTraining(config(resumed), { examples, quiet: true, resume: true });
  expect(b.steps).toBe(3);

  for (const file of ["model.safetensors", "optimizer.safetensors"]) {
    const x = fs.readFileSync(path.join(a.finalCheckpoint, file));
    const y = fs.readFileSync(path.join(b.finalCheckpoint, file));
    expect(Buffer.compare(x, y)).toBe(0);
  }
  const metrics = (dir: string) => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map(withoutTimes);
  expect(metrics(resumed)).toEqual(metrics(straight));
  // The steps did learn something: rewards differed within groups, so gradients were not zero.
  expect(metrics(straight).some((m) => m.rewardStd > 0 && m.gradNorm > 0)).toBe(true);
  expect(metrics(straight).map((m) => m.step)).toEqual([1, 2, 3]);
  // The checkpoint is a Hugging Face directory: config, weights, tokenizer, plus the trainer state.
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors", "trainer_state.json"])
    expect(fs.existsSync(path.join(a.finalCheckpoint, f))).toBe(true);
  expect(readSafetensorsHeader(path.join(a.finalCheckpoint, "optimizer.safetensors")).metadata.step).toBe("3");
  const summary = JSON.parse(fs.readFileSync(path.join(straight, "summary.json"), "utf8"));
  expect(summary.steps).toBe(3);
  expect(fs.existsSync(path.join(straight, "config.yaml"))).toBe(true);
});

test("metrics.jsonl carries the Octopus step metrics", async () => {
  const dir = path.join(tmp, "metrics");
  await runTraining(config(dir, ["run.steps=1"]), { examples, quiet: true });
  const [line] = fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  for (const key of ["reward", "accuracyO1", "accuracyFinal", "transitions", "augmented", "kl", "clipFraction", "entropy", "responseLength", "generationTokensPerSecond", "seconds", "lr", "gradNorm"])
    expect(line).toHaveProperty(key);
  // n originals + n augmented samples per prompt.
  expect(line.trainedSequences).toBe(2 * 2 * 4);
  expect(Object.values(line.augmented as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(2 * 4);
});

test("run.evalEvery: every N-th step's metrics line carries the held-out evaluation; summary keeps before and after", async () => {
  const dir = path.join(tmp, "eval-every");
  const evalExamples = arithmeticProblems(6, 99);
  const summary = await runTraining(config(dir, ["run.evalEvery=2"]), { examples, evalExamples, quiet: true });
  const lines = fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  expect(lines.map((l) => [l.step, "eval" in l])).toEqual([[1, false], [2, true], [3, false]]);
  const evaluated = lines[1].eval;
  expect([evaluated.problems, evaluated.samplesPerProblem, evaluated.rounds, evaluated.count]).toEqual([6, 1, 2, 6]);
  expect(evaluated.accuracy).toEqual([evaluated.accT1, evaluated.accT2]);
  expect(evaluated.delta).toBeCloseTo(evaluated.deltaIncorrectToCorrect - evaluated.deltaCorrectToIncorrect, 12);
  const saved = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8"));
  expect(saved.evalBefore.problems).toBe(6);
  expect(saved.evalAfter).toEqual(summary.evalAfter);
  expect(saved.evalAfter.problems).toBe(6);
});

describe("bad input gives a clear error", () => {
  test("a missing model directory", async () => {
    await expect(runTraining(config(path.join(tmp, "x"), [`model.path=${path.join(tmp, "no-model")}`]), { examples, quiet: true })).rejects.toThrow(/no-model' does not exist/);
  });
  test("an empty dataset", async () => {
    const empty = path.join(tmp, "empty.jsonl");
    fs.writeFileSync(empty, "");
    await expect(runTraining(config(path.join(tmp, "y"), [`data.train.path=${empty}`]), { quiet: true })).rejects.toThrow(/the dataset is empty/);
  });
  test("run.evalEvery without held-out data", async () => {
    await expect(runTraining(config(path.join(tmp, "w"), ["run.evalEvery=1"]), { examples, quiet: true })).rejects.toThrow(/run\.evalEvery = 1 needs held-out problems: set data\.eval\.path/);
  });
  test("a config without training data", async () => {
    await expect(runTraining(config(path.join(tmp, "z")), { quiet: true })).rejects.toThrow(/no training data/);
  });
  test("a malformed config key", () => {
    expect(() => parseConfig({ rollout: { samplesPerPrompt: "eight" } }, "recipe.yaml")).toThrow(/recipe\.yaml: key 'rollout\.samplesPerPrompt'/);
  });
});

test("every recipe in configs/ is valid", () => {
  const dir = path.join(__dirname, "..", "configs");
  const recipes = fs.readdirSync(dir).filter((f) => f.endsWith(".yaml"));
  expect(recipes.length).toBeGreaterThan(0);
  for (const f of recipes) expect(() => loadConfig(path.join(dir, f))).not.toThrow();
});
