// The run report's pure parts (metrics → series, transition rates, stage concatenation, bad
// input) on small hand-made run directories, and the written files; the rendering of a real
// run in a browser is test/report-browser.test.ts.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { evaluationMetrics } from "../lib/eval/metrics";
import { PLOTS, ReportInputError, parseMetricsFile, plotRows, readRun, stageSpans, transitionRates, writeRunReport } from "../lib/report";

const CLI = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-report-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let dirCount = 0;
function runDir(files: Record<string, string>): string {
  const dir = path.join(tmp, `run-${++dirCount}`);
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/** A metrics.jsonl line shaped like lib/rl/step.ts StepMetrics, with values that differ per step. */
function stepLine(step: number, extra: Record<string, unknown> = {}) {
  return {
    step, lr: 1e-6, loss: 0.1 * step, gradNorm: 1, skipped: false,
    reward: 0.1 * step, rewardStd: 0.2, accuracyO1: 0.05 * step, accuracyFinal: 0.06 * step, markerRate: 0.5,
    transitions: { w2c: step, c2c: 2, c2w: 1, w2w: 4 }, augmented: { w2c: 1, c2c: 1, c2w: 1, w2w: 1, copy: 0 },
    kl: 1e-3 * step, clipFraction: 0.01 * step, entropy: 1.5 - 0.1 * step, responseLength: 80 + step,
    trainedSequences: 32, droppedGroups: 0, generatedTokens: 1000, generationTokensPerSecond: 500 + step,
    seconds: { generation: 1, logprobs: 1, training: 1, total: 3 },
    ...extra,
  };
}
const jsonl = (lines: unknown[]) => lines.map((l) => JSON.stringify(l) + "\n").join("");

describe("metrics.jsonl parsing", () => {
  test("reads every line, skips blank ones, and keeps null (a NaN metric) as a gap", () => {
    const dir = runDir({ "metrics.jsonl": jsonl([stepLine(1), stepLine(2, { loss: null, kl: null })]) + "\n\n" });
    const lines = parseMetricsFile(path.join(dir, "metrics.jsonl"));
    expect(lines.map((l) => l.step)).toEqual([1, 2]);
    expect(lines[1].kl).toBeNull();
    const kl = PLOTS.find((p) => p.id === "kl")!;
    expect(plotRows(kl, readRun(dir).stages).map((r) => r.step)).toEqual([1]);
  });

  test.each([
    ["a missing file", undefined, /metrics\.jsonl not found/],
    ["an empty file", "", /metrics\.jsonl holds no steps/],
    ["a line that is not JSON", jsonl([stepLine(1)]) + '{"step": 2, "rew', /metrics\.jsonl line 2: not valid JSON .*partial last line/],
    ["a metric of the wrong type", jsonl([stepLine(1), stepLine(2, { reward: "high" })]), /metrics\.jsonl line 2: key 'reward': .*number/],
    ["transition counts of the wrong shape", jsonl([stepLine(1, { transitions: { w2c: 1 } })]), /line 1: key 'transitions\.c2c'/],
    ["a line without a step", jsonl([{ reward: 1 }]), /line 1: key 'step'/],
    ["a line that is not an object", "[1, 2]\n", /line 1: /],
    ["steps out of order", jsonl([stepLine(1), stepLine(3), stepLine(2)]), /line 3: step 2 comes after step 3 \(line 2\)/],
    ["a repeated step", jsonl([stepLine(1), stepLine(1)]), /line 2: step 1 comes after step 1/],
  ])("%s is an error naming the file and line", (_, text, message) => {
    const dir = runDir(text === undefined ? { "summary.json": "{}" } : { "metrics.jsonl": text });
    const file = path.join(dir, "metrics.jsonl");
    expect(() => parseMetricsFile(file)).toThrow(ReportInputError);
    expect(() => parseMetricsFile(file)).toThrow(message);
    expect(() => parseMetricsFile(file)).toThrow(file);
  });
});

describe("transition rates", () => {
  test("each bucket's share of the samples that corrected themselves", () => {
    expect(transitionRates({ w2c: 3, c2c: 1, c2w: 0, w2w: 4 })).toEqual({ w2c: 3 / 8, c2c: 1 / 8, c2w: 0, w2w: 4 / 8 });
    const rates = transitionRates({ w2c: 7, c2c: 11, c2w: 2, w2w: 13 })!;
    expect(rates.w2c + rates.c2c + rates.c2w + rates.w2w).toBeCloseTo(1, 12);
  });

  test("no self-correcting sample: no rate (a gap in the plot, not a 0)", () => {
    expect(transitionRates({ w2c: 0, c2c: 0, c2w: 0, w2w: 0 })).toBeUndefined();
    const dir = runDir({ "metrics.jsonl": jsonl([stepLine(1, { transitions: { w2c: 0, c2c: 0, c2w: 0, w2w: 0 } }), stepLine(2)]) });
    const rows = plotRows(PLOTS.find((p) => p.id === "transitions")!, readRun(dir).stages);
    expect(rows.map((r) => [r.step, r.series, r.value])).toEqual([
      [2, "w→c", 2 / 9],
      [2, "c→c", 2 / 9],
      [2, "c→w", 1 / 9],
      [2, "w→w", 4 / 9],
    ]);
  });
});

describe("metrics → series", () => {
  test("every plot takes its values from the named metrics of each step", () => {
    const lines = [stepLine(1), stepLine(2), stepLine(3)];
    const { stages } = readRun(runDir({ "metrics.jsonl": jsonl(lines) }));
    const expected: Record<string, [string, (l: ReturnType<typeof stepLine>) => number][]> = {
      reward: [["reward", (l) => l.reward]],
      accuracy: [["o1 accuracy", (l) => l.accuracyO1], ["final accuracy", (l) => l.accuracyFinal], ["marker rate", (l) => l.markerRate]],
      kl: [["KL", (l) => l.kl]],
      entropy: [["entropy", (l) => l.entropy]],
      "clip-fraction": [["clip fraction", (l) => l.clipFraction]],
      "response-length": [["response length", (l) => l.responseLength]],
      "tokens-per-second": [["tokens/s", (l) => l.generationTokensPerSecond]],
    };
    for (const [id, series] of Object.entries(expected)) {
      const rows = plotRows(PLOTS.find((p) => p.id === id)!, stages);
      const want = lines.flatMap((l) => series.map(([label, value]) => ({ step: l.step, stageStep: l.step, stage: "", series: label, value: value(l) })));
      expect(rows).toEqual(want);
    }
  });

  test("eval objects logged at some steps become the held-out eval plot", () => {
    // Four problems, one sample each, rounds t1 and t2: w→c, c→c, c→w, w→w.
    const graded = [[false, true], [true, true], [true, false], [false, false]].map(([t1, t2]) => [[{ answer: "1", correct: t1 }, { answer: "1", correct: t2 }]]);
    const evalMetrics = evaluationMetrics(graded, [[true], [false], [true], [true]], [1]);
    const dir = runDir({ "metrics.jsonl": jsonl([stepLine(1), stepLine(2, { eval: evalMetrics }), stepLine(3)]) });
    const rows = plotRows(PLOTS.find((p) => p.id === "eval")!, readRun(dir).stages);
    expect(rows.map((r) => [r.step, r.series, r.value])).toEqual([
      [2, "Acc@t1", 0.5],
      [2, "Acc@t2", 0.5],
      [2, "Δi→c", 0.25],
      [2, "Δc→i", 0.25],
    ]);
  });
});

describe("run directories", () => {
  test("a staged run (the demo) concatenates stage1, stage2, … along the step axis, numbered in order", () => {
    const dir = runDir({
      "summary.json": JSON.stringify({ evaluations: { afterSft: { accT1: 0.1 }, afterStage1: { accT1: 0.2 } }, seconds: 5 }),
      "stage1/metrics.jsonl": jsonl([stepLine(1), stepLine(2), stepLine(3)]),
      "stage1/summary.json": JSON.stringify({ steps: 3, evalAfter: { accT1: 0.3 } }),
      "stage2/metrics.jsonl": jsonl([stepLine(1), stepLine(2)]),
      "stage10/metrics.jsonl": jsonl([stepLine(1)]),
      "sft/config.json": "{}",
    });
    const run = readRun(dir);
    expect(run.stages.map((s) => [s.name, s.stepOffset])).toEqual([["stage1", 0], ["stage2", 3], ["stage10", 5]]);
    expect(stageSpans(run.stages)).toEqual([
      { stage: "stage1", firstStep: 1, lastStep: 3 },
      { stage: "stage2", firstStep: 4, lastStep: 5 },
      { stage: "stage10", firstStep: 6, lastStep: 6 },
    ]);
    const reward = plotRows(PLOTS.find((p) => p.id === "reward")!, run.stages);
    expect(reward.map((r) => [r.step, r.stage, r.stageStep, r.value])).toEqual([
      [1, "stage1", 1, 0.1], [2, "stage1", 2, 0.2], [3, "stage1", 3, 0.30000000000000004],
      [4, "stage2", 1, 0.1], [5, "stage2", 2, 0.2],
      [6, "stage10", 1, 0.1],
    ]);
    expect(run.evaluations.map((e) => e.label)).toEqual(["after SFT", "after Stage 1", "stage1: after training"]);
  });

  test("a training run reads its own metrics and evalBefore/evalAfter", () => {
    const dir = runDir({
      "metrics.jsonl": jsonl([stepLine(1), stepLine(2)]),
      "summary.json": JSON.stringify({ steps: 2, evalBefore: { accT1: 0.1 }, evalAfter: { accT1: 0.4 } }),
    });
    const run = readRun(dir);
    expect(run.stages).toHaveLength(1);
    expect(run.stages[0].name).toBe("");
    expect(run.evaluations.map((e) => [e.label, e.metrics.accT1])).toEqual([["before training", 0.1], ["after training", 0.4]]);
  });

  test.each([
    ["a directory that does not exist", {}, "nowhere", /run directory .*nowhere not found/],
    ["a directory with neither metrics.jsonl nor stages", { "notes.txt": "x" }, "", /metrics\.jsonl not found, nor stage directories/],
    ["a stage without metrics.jsonl", { "stage1/metrics.jsonl": jsonl([stepLine(1)]), "stage2/config.yaml": "" }, "", /stage2\/metrics\.jsonl not found/],
    ["a malformed summary.json", { "metrics.jsonl": jsonl([stepLine(1)]), "summary.json": "{oops" }, "", /summary\.json: not valid JSON/],
    ["a summary.json that is not an object", { "metrics.jsonl": jsonl([stepLine(1)]), "summary.json": "[]" }, "", /summary\.json: expected a JSON object/],
  ])("%s is a clear error", (_, files, sub, message) => {
    const dir = path.join(runDir(files as Record<string, string>), sub);
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    expect(() => readRun(dir)).toThrow(message);
  });
});

describe("the written report", () => {
  test("HTML and one SVG per plot with data; self-contained; rewritten whole", async () => {
    const dir = runDir({
      "metrics.jsonl": jsonl([stepLine(1), stepLine(2, { eval: { accT1: 0.25, accT2: 0.5, deltaIncorrectToCorrect: 0.25, deltaCorrectToIncorrect: 0, count: 8 } })]),
      "summary.json": JSON.stringify({ steps: 2, evalAfter: { count: 8, accT1: 0.25, accT2: 0.375, delta: 0.125, deltaIncorrectToCorrect: 0.25, deltaCorrectToIncorrect: 0.125, markerRate: 0.5, passAtK: { "1": 0.3 } } }),
    });
    const report = await writeRunReport(dir);
    expect(report.html).toBe(path.join(dir, "report.html"));
    expect(report.emptyPlots).toEqual([]);
    expect(fs.readdirSync(report.plotsDir).sort()).toEqual(PLOTS.map((p) => `${p.id}.svg`).sort());
    const html = fs.readFileSync(report.html, "utf8");
    for (const plot of PLOTS) {
      expect(html).toContain(`data-plot="${plot.id}"`);
      const svg = fs.readFileSync(path.join(report.plotsDir, `${plot.id}.svg`), "utf8");
      expect(svg).toMatch(/^<svg /);
      expect(svg).toContain('aria-roledescription="point"');
    }
    // Self-contained: no scripts, stylesheets, images or frames to fetch.
    expect(html).not.toMatch(/<script|<link|<img|<iframe|\ssrc=|url\(/i);
    expect(html).toContain("<td>+12.5%</td>"); // Δ of evalAfter, signed
    expect(html).toContain("passAtK.1"); // numbers outside the table's columns are listed too
    expect(fs.readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);

    // A rewrite without eval lines drops the eval plot and its stale SVG.
    fs.writeFileSync(path.join(dir, "metrics.jsonl"), jsonl([stepLine(1), stepLine(2)]));
    const again = await writeRunReport(dir);
    expect(again.emptyPlots).toEqual(["eval"]);
    expect(fs.existsSync(path.join(dir, "plots", "eval.svg"))).toBe(false);
    expect(fs.readFileSync(again.html, "utf8")).not.toContain('data-plot="eval"');
  });

  test("the CLI writes --out with plots/ beside it, and bad input exits 1 naming the file and line", () => {
    const dir = runDir({ "metrics.jsonl": jsonl([stepLine(1)]) });
    const out = path.join(tmp, "elsewhere", "r.html");
    fs.mkdirSync(path.dirname(out));
    const ok = spawnSync(process.execPath, [CLI, "report", dir, "--out", out], { encoding: "utf8" });
    expect(ok.stderr).toContain("not logged by this run (no plot): eval");
    expect(ok.status).toBe(0);
    expect(ok.stdout.trim()).toBe(out);
    expect(fs.existsSync(path.join(path.dirname(out), "plots", "reward.svg"))).toBe(true);
    expect(fs.existsSync(path.join(dir, "report.html"))).toBe(false);

    fs.appendFileSync(path.join(dir, "metrics.jsonl"), '{"step": 2, "reward": "x"}\n');
    const bad = spawnSync(process.execPath, [CLI, "report", dir], { encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe(`octo-native: ${path.join(dir, "metrics.jsonl")} line 2: key 'reward': Invalid input: expected number, received string\n`);
  });
});
