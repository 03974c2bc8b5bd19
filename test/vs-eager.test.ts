// The eager PyTorch baseline of `octo-native bench vs-eager` (native/core/bench_kernels.h EagerModel)
// and the bench itself: the baseline must compute transformers' function, and the bench's JSON must
// carry every figure and pass its own agreement checks. No time or ratio is asserted.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { native } from "../lib/native";

const FIXTURES = path.join(__dirname, "fixtures", "hf-parity");

describe.each(["llama3", "qwen2", "qwen3"])("the eager baseline computes transformers' logits: %s", (family) => {
  test("plain case of the HF-parity fixture, max |Δlogit| <= 1e-4", async () => {
    const dir = path.join(FIXTURES, family);
    const c = (JSON.parse(fs.readFileSync(path.join(dir, "expected.json"), "utf8")) as {
      cases: { name: string; input_ids: number[][]; logits: number[][][] }[];
    }).cases.find((x) => x.name === "plain")!;
    const model = await Model.load(dir, { device: "cpu" });
    try {
      const eager = new (native().ops.EagerModel)(model.handle);
      const batch = c.input_ids.length, length = c.input_ids[0].length;
      const logits = (await eager.forward({ inputIds: Int32Array.from(c.input_ids.flat()), batch, length, returnLogits: true }))!;
      const expected = c.logits.flat(2);
      expect(logits.length).toBe(expected.length);
      let maxDelta = 0;
      for (let i = 0; i < expected.length; i++) maxDelta = Math.max(maxDelta, Math.abs(logits[i] - expected[i]));
      expect(maxDelta).toBeLessThanOrEqual(1e-4);
    } finally {
      model.dispose();
    }
  });
});

test("octo-native bench vs-eager --quick --json: every figure, both memory readings, the agreement checks", () => {
  const cli = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
  const run = spawnSync(process.execPath, [cli, "bench", "vs-eager", "--quick", "--json"], { encoding: "utf8", timeout: 240_000 });
  expect(run.stderr).toBe("");
  expect(run.status).toBe(0);
  const result = JSON.parse(run.stdout);
  expect(result.bench).toBe("vs-eager");
  expect(typeof result.ratioMeaning).toBe("string");
  const figures = ["forward", "trainStep", "decode", "loss"] as const;
  expect(Object.keys(result.throughputRatios).sort()).toEqual([...figures].sort());
  expect(result.ratio).toBe(Math.min(result.throughputRatios.forward, result.throughputRatios.trainStep, result.throughputRatios.decode));
  for (const name of figures) {
    const f = result.figures[name];
    expect(f.octoTokensPerSecond).toBeGreaterThan(0);
    expect(f.eagerTokensPerSecond).toBeGreaterThan(0);
    expect(f.ratio).toBeCloseTo(f.octoTokensPerSecond / f.eagerTokensPerSecond, 6);
    expect(f.roundSeconds.octo).toHaveLength(result.workload.rounds);
    expect(f.roundSeconds.eager).toHaveLength(result.workload.rounds);
    expect(f.octoPeakTensorMiB).toBeGreaterThan(0);
    expect(f.eagerPeakTensorMiB).toBeGreaterThan(0);
  }
  const { prompts, newTokens } = result.workload.decode;
  expect(result.figures.decode.octoGeneratedTokens).toBe(prompts * newTokens);

  // Both sides compute the same function: forward logits, the first train step from the same weights,
  // greedy decoding, and the fused vs eager loss on the same inputs.
  const checks = result.checks;
  expect(checks.logitsTolerance).toBe(1e-4);
  expect(checks.logitsAgree).toBe(true);
  expect(checks.logitsMaxAbsDifference).toBeLessThanOrEqual(checks.logitsTolerance);
  expect(checks.firstTrainStep.lossDifference).toBeLessThan(1e-5);
  expect(checks.firstTrainStep.gradNormRelativeDifference).toBeLessThan(1e-4);
  expect(checks.greedyDecodeSameTokens).toBe(1);
  expect(checks.fusedLossDifference).toBeLessThan(1e-4);

  const memory = result.trainStepMemory;
  for (const side of [memory.octo, memory.eager]) {
    expect(side.peakRssBytes).toBeGreaterThan(0);
    expect(side.peakRssBytes).toBeGreaterThanOrEqual(side.setupRssBytes);
    expect(side.stepSeconds).toHaveLength(result.workload.rssSteps);
  }
  expect(memory.peakRssRatio).toBeCloseTo(memory.octo.peakRssBytes / memory.eager.peakRssBytes, 6);
  expect(memory.peakTensorRatio).toBeGreaterThan(0);

  expect(result.engine.threads).toBeGreaterThan(0);
  expect(result.environment.threads).toBe(result.engine.threads);
  expect(result.environment.libtorch).toMatch(/^\d+\.\d+/);
  expect(typeof result.environment.cpu).toBe("string");
  expect(result.environment.node).toMatch(/^v?\d+/);
});
