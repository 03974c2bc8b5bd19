// `octo-native eval` end to end on the quick demo run: it reproduces the accuracy the demo
// recorded, its outputs hold every sample, multi-round and two-turn modes give R rounds, and
// presets load the real benchmark files.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { runEvalCommand, type EvalSummary } from "../lib/commands/eval";
import { Model } from "../lib/engine/model";
import type { GenerationResult } from "../lib/engine/sampling";
import { TextTokenizer } from "../lib/engine/tokenizer";
import { evaluateModel, type EvalSample } from "../lib/eval/evaluate";
import { presetDirectories, resolveEvalData } from "../lib/eval/presets";
import { closeVerifier } from "../lib/grading/verify";
import { loadDataset } from "../lib/rl/data";
import { encodePrompt } from "../lib/rl/prompts";
import { quickDemoRun } from "./helpers/quick-demo";

const CLI = path.join(__dirname, "..", "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-eval-test-"));
afterAll(async () => {
  fs.rmSync(tmp, { recursive: true, force: true });
  await closeVerifier();
});

const readSamples = (dir: string): EvalSample[] =>
  fs.readFileSync(path.join(dir, "samples.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as EvalSample);
const readSummary = (dir: string): EvalSummary => JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")) as EvalSummary;

describe("on the quick demo run", () => {
  let run: Awaited<ReturnType<typeof quickDemoRun>>;
  beforeAll(async () => {
    run = await quickDemoRun(); // built once per jest invocation, shared with other test files
  }, 900_000);

  test("the CLI reproduces the accuracy in the demo's summary.json exactly; Δ = Δi→c − Δc→i on its outputs", async () => {
    const { dir, summary } = run;
    const { settings, data, checkpoints } = summary.evalSetup;
    const out = path.join(tmp, "reproduce");
    const args = [
      "eval", "--model", path.join(dir, checkpoints.afterStage2), "--data", path.join(dir, data), "--out", out,
      "--mode", settings.mode, "--n", String(settings.samplesPerProblem), "--rounds", String(settings.rounds),
      "--temperature", String(settings.temperature), "--top-p", String(settings.topP), "--max-tokens", String(settings.maxNewTokens),
      "--batch", String(settings.batch), "--seed", String(settings.seed), "--template", settings.prompt.template,
      settings.prompt.chat ? "--chat" : "--no-chat", "--separator", settings.separator, "--device", "cpu",
    ];
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 300_000 });
    expect(r.stderr).not.toMatch(/octo-native:/);
    // stderr is a pipe here, not a TTY: plain progress lines instead of a bar
    expect(r.stderr).toContain(`eval eval.jsonl: ${summary.evalProblems}/${summary.evalProblems} problems`);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/accuracy by round: t1 [\d.]+% {2}t2/);
    const reproduced = readSummary(out);
    expect(reproduced.settings).toEqual(settings);
    expect(reproduced.metrics).toEqual(summary.evaluations.afterStage2);

    // Every sample and round is in the JSONL, and the summary's numbers follow from those lines.
    const samples = readSamples(out);
    const { problems, samplesPerProblem, rounds } = reproduced.metrics;
    expect(problems).toBe(summary.evalProblems);
    expect(samples).toHaveLength(problems * samplesPerProblem * rounds);
    const at = (round: number) => new Map(samples.filter((s) => s.round === round).map((s) => [`${s.problemIndex}/${s.sample}`, s.correct]));
    const [t1, t2] = [at(1), at(2)];
    const total = t1.size;
    const count = (f: (a: boolean, b: boolean) => boolean) => [...t1.keys()].filter((key) => f(t1.get(key)!, t2.get(key)!)).length / total;
    const m = reproduced.metrics;
    expect(m.accT1).toBeCloseTo(count((a) => a), 12);
    expect(m.accT2).toBeCloseTo(count((_, b) => b), 12);
    expect(m.deltaIncorrectToCorrect).toBeCloseTo(count((a, b) => !a && b), 12);
    expect(m.deltaCorrectToIncorrect).toBeCloseTo(count((a, b) => a && !b), 12);
    expect(m.delta).toBeCloseTo(m.deltaIncorrectToCorrect - m.deltaCorrectToIncorrect, 12);
    expect(m.delta).toBeCloseTo(m.accT2 - m.accT1, 12);
    // The numbers are not all zero (the reproduction could not fail otherwise). Not the accuracy:
    // the quick demo's tiny model gets ~3-8% of 128 samples right, so 0 right is a legitimate
    // outcome on some machine. The marker rate: its SFT data always carry the marker and ~9 in
    // 10 samples write it, so none of 128 doing so is beyond any chance.
    expect(m.markerRate).toBeGreaterThan(0);
    // round 2 without a marker carries round 1's answer
    for (const s of samples.filter((x) => x.carried)) {
      const first = samples.find((x) => x.problemIndex === s.problemIndex && x.sample === s.sample && x.round === 1)!;
      expect([s.answer, s.correct, s.text]).toEqual([first.answer, first.correct, first.text]);
    }
  });

  test.each([["octopus"], ["two-turn"]] as const)("%s mode: 3 rounds of metrics, n × items × rounds JSONL lines", async (mode) => {
    const { dir, summary } = run;
    const out = path.join(tmp, mode);
    const result = await runEvalCommand({
      model: path.join(dir, summary.evalSetup.checkpoints.afterStage2), data: path.join(dir, summary.evalSetup.data), limit: 6, out,
      device: "cpu", progress: false,
      settings: { ...summary.evalSetup.settings, mode, rounds: 3, samplesPerProblem: 2, ks: undefined, batch: 4 },
    });
    const m = result.metrics;
    expect([m.problems, m.samplesPerProblem, m.rounds]).toEqual([6, 2, 3]);
    expect(m.accuracy).toHaveLength(3);
    expect(m.byRound.map((b) => b.round)).toEqual([1, 2, 3]);
    expect(m.transitions.map((t) => [t.from, t.to])).toEqual([[1, 2], [2, 3], [1, 3]]);
    for (const t of m.transitions) expect(t.delta).toBeCloseTo(t.incorrectToCorrect - t.correctToIncorrect, 12);
    expect(Object.keys(m.byRound[2].passAtK)).toEqual(["1", "2"]);
    const samples = readSamples(out);
    expect(samples).toHaveLength(6 * 2 * 3);
    expect(readSummary(out).metrics).toEqual(m);
    // Round 3 is generated, never carried; in two-turn mode no round is carried.
    expect(samples.filter((s) => s.round === 3 && s.carried)).toHaveLength(0);
    if (mode === "two-turn") expect(samples.filter((s) => s.carried)).toHaveLength(0);
    // Something was generated for the later rounds (not all empty attempts): after the marker the
    // SFT model writes a re-solve, so all 12 round-3 attempts ending at once is beyond any chance.
    expect(samples.filter((s) => s.round === 3).some((s) => s.text.length > 0)).toBe(true);
  });

  test("octopus's continued round and two-turn turn 2 are what generating from the assembled prompt from scratch gives (greedy)", async () => {
    const { dir, summary } = run;
    const modelDir = path.join(dir, summary.evalSetup.checkpoints.afterStage2);
    const examples = (await loadDataset({ path: path.join(dir, summary.evalSetup.data) })).slice(0, 4);
    const model = await Model.load(modelDir, { device: "cpu" });
    const tokenizer = TextTokenizer.fromDir(modelDir);
    const { prompt, separator, maxNewTokens, instruction } = summary.evalSetup.settings;
    try {
      const params = { temperature: 0, maxNewTokens, eosTokenIds: tokenizer.eosTokenIds };
      const strip = (r: GenerationResult) => Array.from(r.finishReason === "eos" ? r.tokens.subarray(0, -1) : r.tokens);
      const firsts: { promptIds: Int32Array; first: GenerationResult; segments: string[] }[] = [];
      for (const example of examples) {
        const promptIds = encodePrompt(example, tokenizer, prompt);
        const [[first]] = await model.generate([{ promptIds }], params);
        firsts.push({ promptIds, first, segments: tokenizer.decode(strip(first), { skipSpecialTokens: true }).split(separator) });
      }
      // The round octopus mode generates by appending the marker to the first pass and continuing:
      // round 3 after a pass with at most one marker (round 2 is o2, or o1 carried), round s + 1
      // after a pass the model itself split into s ≥ 3 attempts. Evaluating that many rounds takes
      // every problem down the continuation path, whatever the model wrote.
      const continuedRound = firsts.map((f) => Math.max(3, f.segments.length + 1));
      const result = await evaluateModel(model, tokenizer, examples, { prompt, separator, maxNewTokens, rounds: Math.max(...continuedRound), batch: 3 });
      const twoTurn = await evaluateModel(model, tokenizer, examples, { prompt, maxNewTokens, instruction, mode: "two-turn", rounds: 2, batch: 3 });
      const sep = Array.from(tokenizer.encode(separator, { addSpecialTokens: false }));
      for (const [i, { promptIds, first, segments }] of firsts.entries()) {
        const rounds = result.samples.filter((s) => s.problemIndex === i).map((s) => s.text);
        // the first pass's attempts; without a marker, o1 carried as round 2
        expect(rounds.slice(0, Math.max(2, segments.length))).toEqual(segments.length === 1 ? [segments[0], segments[0]] : segments);
        // two-turn (no chat template here): prompt + turn 1 + the instruction, then turn 2
        const instructionIds = Array.from(tokenizer.encode(`\n\n${instruction}\n\n`, { addSpecialTokens: false }));
        const [[turn2]] = await model.generate([{ promptIds: Int32Array.from([...promptIds, ...strip(first), ...instructionIds]) }], params);
        const turns = twoTurn.samples.filter((s) => s.problemIndex === i).map((s) => s.text);
        expect(turns).toEqual([tokenizer.decode(strip(first), { skipSpecialTokens: true }), tokenizer.decode(strip(turn2), { skipSpecialTokens: true })]);
        const [[next]] = await model.generate([{ promptIds: Int32Array.from([...promptIds, ...strip(first), ...sep]) }], params);
        expect(rounds[continuedRound[i] - 1]).toBe(tokenizer.decode(strip(next), { skipSpecialTokens: true }).split(separator)[0]);
      }
    } finally {
      model.dispose();
    }
  });
});

describe("presets", () => {
  test("--data gsm8k --limit 4 loads the real GSM8K test rows", async () => {
    const spec = resolveEvalData("gsm8k", 4);
    expect(spec.preset).toBe("gsm8k");
    const examples = await loadDataset(spec);
    expect(examples.map((e) => e.answer)).toEqual(["18", "3", "70000", "540"]);
    expect(examples[0].problem).toMatch(/^Janet’s ducks lay 16 eggs per day/);
  });

  test("math500 resolves to the shipped file; aime24 and amc23, not shipped, fail saying where to put them", async () => {
    expect(await loadDataset(resolveEvalData("math500"))).toHaveLength(500);
    const saved = process.env.OCTO_NATIVE_DATA;
    delete process.env.OCTO_NATIVE_DATA;
    try {
      for (const name of ["aime24", "amc23"])
        expect(() => resolveEvalData(name)).toThrow(
          new RegExp(`preset '${name}': ${name} is not shipped .* Put its file at DIR/${name}/test.jsonl .* set OCTO_NATIVE_DATA=DIR, or pass --data`),
        );
    } finally {
      if (saved !== undefined) process.env.OCTO_NATIVE_DATA = saved;
    }
  });

  test("OCTO_NATIVE_DATA is searched first; an unknown name lists the presets", () => {
    const own = path.join(tmp, "own-data");
    fs.mkdirSync(path.join(own, "aime24"), { recursive: true });
    fs.writeFileSync(path.join(own, "aime24", "test.jsonl"), JSON.stringify({ id: 1, problem: "1+1", answer: "2" }) + "\n");
    const saved = process.env.OCTO_NATIVE_DATA;
    process.env.OCTO_NATIVE_DATA = own;
    try {
      expect(presetDirectories()[0]).toBe(own);
      expect(resolveEvalData("aime24").path).toBe(path.join(own, "aime24", "test.jsonl"));
    } finally {
      if (saved === undefined) delete process.env.OCTO_NATIVE_DATA;
      else process.env.OCTO_NATIVE_DATA = saved;
    }
    expect(() => resolveEvalData("gsm9k")).toThrow(/'gsm9k' is neither a file nor a preset \(presets: gsm8k, math500, aime24, amc23\)/);
  });
});

test("bad eval flags fail with a clear message and exit code 1 before any model loads", () => {
  const cases: [string[], RegExp][] = [
    [["--data", "gsm8k", "--n", "4"], /4 samples per problem at temperature 0 \(greedy\) would be 4 identical samples; set a temperature > 0/],
    [["--data", "nope"], /--data 'nope' is neither a file nor a preset/],
    [["--data", "gsm8k", "--n", "2", "--temperature", "1", "--k", "4"], /k = 4 is more than the 2 samples per problem/],
    [["--data", "gsm8k", "--rounds", "1"], /evaluation setting 'rounds'/],
    [["--data", "gsm8k", "--limit", "0"], /--limit must be a positive integer/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(process.execPath, [CLI, "eval", "--model", path.join(tmp, "no-model"), ...args], { encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }
});
