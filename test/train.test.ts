// The RL loop end to end on the built-in model (random weights): metrics, checkpoints,
// bit-exact resume, and the errors a user meets first.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems, sampleSolution, writeSolution } from "../lib/demo/arithmetic";
import { ensureDemoModel } from "../lib/demo/model";
import { Model } from "../lib/engine/model";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { TextTokenizer } from "../lib/engine/tokenizer";
import { DEFAULT_SEPARATOR } from "../lib/methods/octopus/octopus";
import { loadConfig, parseConfig } from "../lib/rl/config";
import { runTraining } from "../lib/rl/run";
import { runSft } from "../lib/rl/sft";
import { seededRandom } from "../lib/util/random";

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
  // Rewards alone may leave a step without gradient: at lr 0.01 the cold-start model's rollouts are
  // often all format failures after one step (equal rewards, advantages 0). A small entropy bonus
  // gives every step a gradient from its own rollouts, whatever the rewards, so a resume that drew
  // other rollouts or lost optimizer state could not end on the same weights.
  const withEntropy = ["loss.entropyCoef=0.01"];
  const straight = path.join(tmp, "straight");
  const a = await runTraining(config(straight, withEntropy), { examples, quiet: true });
  expect(a.steps).toBe(3);

  const resumed = path.join(tmp, "resumed");
  const first = await runTraining(config(resumed, withEntropy), { examples, quiet: true, stopAfterSteps: 1 });
  expect(first.interrupted).toBe(true);
  expect(first.steps).toBe(1);
  const b = await runTraining(config(resumed, withEntropy), { examples, quiet: true, resume: true });
  expect(b.steps).toBe(3);

  for (const file of ["model.safetensors", "optimizer.safetensors"]) {
    const x = fs.readFileSync(path.join(a.finalCheckpoint, file));
    const y = fs.readFileSync(path.join(b.finalCheckpoint, file));
    expect(Buffer.compare(x, y)).toBe(0);
  }
  const metrics = (dir: string) => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map(withoutTimes);
  expect(metrics(resumed)).toEqual(metrics(straight));
  // Every step did update the weights (the entropy bonus; on top of it the rewards, where they differed).
  expect(metrics(straight).every((m) => m.gradNorm > 0 && !m.skipped)).toBe(true);
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
  // With no entropy bonus the loss does not compute the entropy: the sampled tokens' −log p estimate it.
  // It is > 0 unless every sampled token had probability 1 in float32; the cold-start model samples
  // at ~1.5 nats a token at temperature 1.
  expect(line.entropy).toBeGreaterThan(0);
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

describe("the train command on a terminal and under Ctrl-C", () => {
  const cli = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
  const recipe = path.join(__dirname, "..", "configs", "demo.yaml");
  const dataFile = path.join(tmp, "train.jsonl");
  beforeAll(() => fs.writeFileSync(dataFile, examples.map((e) => JSON.stringify({ problem: e.problem, answer: e.answer })).join("\n") + "\n"));
  const args = (runDir: string, steps: number, extra: string[] = []) => [
    cli, "train", "--config", recipe, "--dir", runDir,
    "--set", `model.path=${modelDir}`, `data.train.path=${dataFile}`, `run.steps=${steps}`, "rollout.promptsPerStep=2",
    "rollout.samplesPerPrompt=4", "rollout.maxNewTokens=96", ...extra,
  ];

  /** Runs the CLI; `onLine` sees each stderr line and may signal the child. */
  function runCli(argv: string[], onLine: (line: string, child: ChildProcess) => void = () => {}): Promise<{ code: number | null; stderr: string; stdout: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "", stdout = "", pending = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => {
        stderr += d;
        pending += d;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) onLine(line, child);
      });
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stderr, stdout }));
    });
  }

  test("Ctrl-C finishes the step in flight, saves a complete checkpoint, exits 130; --resume goes on from there", async () => {
    const runDir = path.join(tmp, "interrupted");
    let signalled = false;
    const first = await runCli(args(runDir, 50), (line, child) => {
      if (!signalled && /^step 1\/50/.test(line)) {
        signalled = true;
        child.kill("SIGINT");
      }
    });
    expect(signalled).toBe(true);
    expect(first.stderr).toMatch(/interrupt: finishing this step, then saving a checkpoint/);
    expect(first.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
    expect(first.code).toBe(130);
    const report = JSON.parse(first.stdout);
    expect(report.interrupted).toBe(true);
    // The signal came during step 2 at the latest: that step finished and was saved.
    expect(report.steps).toBeGreaterThanOrEqual(1);
    expect(report.steps).toBeLessThan(50);
    const saved = JSON.parse(fs.readFileSync(path.join(report.checkpoint, "trainer_state.json"), "utf8"));
    expect(saved.step).toBe(report.steps);
    expect(fs.readdirSync(path.join(runDir, "checkpoints")).filter((d) => d.includes(".partial"))).toEqual([]);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "summary.json"), "utf8")).interrupted).toBe(true);
    const lines = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n");
    expect(lines).toHaveLength(report.steps);

    const resumed = await runCli(args(runDir, report.steps + 1, ["--resume"]));
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain(`resuming ${runDir} from step ${report.steps}`);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ steps: report.steps + 1, interrupted: false });
  });

  test("a second Ctrl-C quits at once and the last complete checkpoint stays usable", async () => {
    const runDir = path.join(tmp, "quit");
    let signals = 0;
    const run = await runCli(args(runDir, 50, ["run.saveEvery=1"]), (line, child) => {
      if (signals === 0 && /^step 2\/50/.test(line)) {
        signals = 2;
        child.kill("SIGINT");
        setTimeout(() => child.kill("SIGINT"), 50);
      }
    });
    expect(signals).toBe(2);
    expect(run.code).toBe(130);
    expect(run.stdout).toBe(""); // quit before the final report
    const complete = fs.readdirSync(path.join(runDir, "checkpoints")).filter((d) => /^step-\d+$/.test(d));
    expect(complete.length).toBeGreaterThanOrEqual(1);
    const resumed = await runCli(args(runDir, 3, ["--resume"]));
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ steps: 3, interrupted: false });
  });

  test("on a terminal: a progress bar with ETA; off a terminal: one plain line per step", async () => {
    const plain = await runCli(args(path.join(tmp, "plain"), 2));
    expect(plain.code).toBe(0);
    expect(plain.stderr.match(/^step \d\/2 reward /gm)).toHaveLength(2);
    expect(plain.stderr).not.toContain("ETA");
    // util-linux `script` gives the child a pseudo-terminal, as an interactive shell would.
    const command = [process.execPath, ...args(path.join(tmp, "tty"), 2)].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
    const tty = spawnSync("script", ["-qefc", command, "/dev/null"], { encoding: "utf8", timeout: 120_000 });
    expect(tty.status).toBe(0);
    expect(tty.stdout).toMatch(/train \[[=-]{40}\] 2\/2 steps \| reward -?\d\.\d{3} \| acc \d\.\d{3} \| ETA \d+s/);
    expect(tty.stdout).not.toMatch(/^step \d\/2 reward /m);
  });
});
