// The engine's threading model (native/README.md, "Threads"): calls issued without awaiting in
// between run whole and in order per model, give exactly what the same calls give one by one,
// and leave the JS thread free while they run.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { PolicyTrainer, type TrainSequence } from "../lib/engine/trainer";
import { TINY_SPECS } from "./helpers/tiny-models";

const spec = TINY_SPECS.qwen3;
const schedule = { lr: 1e-2, warmupSteps: 0, kind: "constant" as const };

function tokens(seed: number, length: number): Int32Array {
  return Int32Array.from({ length }, (_, t) => (seed * 31 + t * 17 + 3) % spec.vocabSize);
}

function sequence(seed: number): TrainSequence {
  const ids = tokens(seed, 12);
  return { tokens: ids, lossMask: Uint8Array.from(ids, (_, t) => (t >= 4 ? 1 : 0)) };
}

/** What one call gave, in a form two runs can be compared by. */
type Outcome = { kind: string; values: ArrayLike<number> | Buffer };

/**
 * 100 calls on `policy` (forward, generate, trainStep, save) and `other` (forward), made in one
 * fixed order; `awaitEach` decides whether each is awaited before the next is made.
 */
async function runCalls(policy: Model, other: Model, dir: string, awaitEach: boolean, done: number[]): Promise<Outcome[]> {
  const trainer = new PolicyTrainer(policy, { schedule, maxGradNorm: 1 });
  const calls: (() => Promise<Outcome>)[] = [];
  for (let i = 0; i < 100; i++) {
    const kind = ["forward", "trainStep", "generate", "other", "forward", "trainStep", "save"][i % 7];
    const ids = tokens(i, 9);
    if (kind === "forward") calls.push(async () => ({ kind, values: await policy.forward(ids, 1, 9) }));
    if (kind === "other") calls.push(async () => ({ kind, values: await other.forward(ids, 1, 9, { output: "last" }) }));
    if (kind === "trainStep")
      calls.push(async () => {
        const r = await trainer.trainStep([sequence(i), sequence(i + 1)], { objective: "supervised" });
        return { kind, values: [r.loss, r.gradNorm, r.step] };
      });
    if (kind === "generate")
      calls.push(async () => {
        const [[sample]] = await policy.generate([{ promptIds: ids.subarray(0, 4), seed: i }], { temperature: 1, maxNewTokens: 6 });
        return { kind, values: [...sample.tokens, ...sample.logprobs] };
      });
    if (kind === "save")
      calls.push(async () => {
        const target = path.join(dir, `save-${i}`);
        await policy.save(target);
        return { kind, values: fs.readFileSync(path.join(target, "model.safetensors")) };
      });
  }
  const outcomes: Outcome[] = [];
  if (awaitEach) {
    for (const call of calls) outcomes.push(await call());
    return outcomes;
  }
  const inFlight = calls.map((call, i) => call().then((outcome) => (done.push(i), outcome)));
  return Promise.all(inFlight);
}

describe("one engine thread per device", () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-threads-"))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("100 mixed calls made without awaiting finish in order, equal to the same calls awaited one by one, and never block the event loop", async () => {
    const sequential = await runCalls(await Model.create(spec, 5), await Model.create(spec, 6), path.join(dir, "a"), true, []);

    const policy = await Model.create(spec, 5), other = await Model.create(spec, 6);
    // Timer probe: the longest gap between ticks of a 2 ms interval while the calls run.
    let last = performance.now(), longestGap = 0, ticks = 0;
    const probe = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
      ticks++;
    }, 2);
    const done: number[] = [];
    let concurrent: Outcome[];
    try {
      last = performance.now();
      concurrent = await runCalls(policy, other, path.join(dir, "b"), false, done);
    } finally {
      clearInterval(probe);
    }

    // In order per model (the other model's calls do not wait for the policy's).
    const kinds = sequential.map((o) => o.kind);
    const policyCalls = kinds.flatMap((kind, i) => (kind === "other" ? [] : [i]));
    const otherCalls = kinds.flatMap((kind, i) => (kind === "other" ? [i] : []));
    expect(done.filter((i) => kinds[i] !== "other")).toEqual(policyCalls);
    expect(done.filter((i) => kinds[i] === "other")).toEqual(otherCalls);
    expect(done.length).toBe(100);
    expect(concurrent.map((o) => o.kind)).toEqual(kinds);
    concurrent.forEach((outcome, i) => {
      const a = outcome.values, b = sequential[i].values;
      if (Buffer.isBuffer(a)) expect(Buffer.compare(a, b as Buffer)).toBe(0);
      else expect(Array.from(a)).toEqual(Array.from(b as ArrayLike<number>));
    });
    // The weights really changed between calls, so order mattered: the first and last forward differ.
    const forwards = concurrent.filter((o) => o.kind === "forward");
    expect(Array.from(forwards[0].values as Float32Array)).not.toEqual(Array.from(forwards.at(-1)!.values as Float32Array));
    // The event loop ran throughout (the calls took many ticks) and never stalled past 50 ms.
    expect(ticks).toBeGreaterThan(10);
    expect(longestGap).toBeLessThan(50);
  });

  test("a trainStep and a forward made together: the forward sees the whole step; a disposed model rejects", async () => {
    const model = await Model.create(spec, 7);
    const trainer = new PolicyTrainer(model, { schedule });
    const before = await model.forward(tokens(1, 9), 1, 9);
    const [report, after] = await Promise.all([trainer.trainStep([sequence(1)], { objective: "supervised" }), model.forward(tokens(1, 9), 1, 9)]);
    expect(report.step).toBe(1);
    expect(Array.from(after)).not.toEqual(Array.from(before));
    model.dispose();
    expect(() => model.forward(tokens(1, 9), 1, 9)).toThrow(/disposed/);
  });
});

describe("the engine's CPU allocator", () => {
  // A child process per cache setting: the cap is read once, at load.
  const script = `
    const { Model } = require(${JSON.stringify(path.join(__dirname, "..", "dist", "lib", "engine", "model.js"))});
    const { PolicyTrainer } = require(${JSON.stringify(path.join(__dirname, "..", "dist", "lib", "engine", "trainer.js"))});
    const { native } = require(${JSON.stringify(path.join(__dirname, "..", "dist", "lib", "native.js"))});
    (async () => {
      const spec = ${JSON.stringify({ ...spec, vocabSize: 4096 })};
      const model = await Model.create(spec, 3);
      const trainer = new PolicyTrainer(model, { schedule: { lr: 1e-2, warmupSteps: 0, kind: "constant" } });
      const ids = Int32Array.from({ length: 64 }, (_, t) => (t * 37 + 5) % spec.vocabSize);
      const sequences = [0, 1, 2, 3].map((b) => ({ tokens: ids.map((id) => (id + b) % spec.vocabSize), lossMask: Uint8Array.from(ids, (_, t) => (t > 0 ? 1 : 0)) }));
      const steps = [];
      for (let i = 0; i < 3; i++) steps.push((({ loss, gradNorm }) => [loss, gradNorm])(await trainer.trainStep(sequences, { objective: "supervised" })));
      const logits = await model.forward(ids, 1, 64);
      console.log(JSON.stringify({ steps, logits: require("node:crypto").createHash("sha256").update(Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength)).digest("hex"), cachedBytes: native().ops.deviceMemory("cpu").cachedBytes }));
    })();`;
  const run = (cacheMegabytes: string) => {
    const child = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", env: { ...process.env, OCTO_NATIVE_CPU_CACHE_MB: cacheMegabytes }, timeout: 120_000 });
    expect({ status: child.status, signal: child.signal, stderr: child.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
    return JSON.parse(child.stdout) as { steps: number[][]; logits: string; cachedBytes: number };
  };

  test("reusing freed blocks changes no value: train steps and logits are bit-identical with the block cache off", () => {
    const cached = run("256"), stock = run("0");
    expect(cached.cachedBytes).toBeGreaterThan(0);
    expect(cached.cachedBytes).toBeLessThanOrEqual(256 * 2 ** 20);
    expect(stock.cachedBytes).toBe(0);
    expect(cached.steps).toEqual(stock.steps);
    expect(cached.logits).toBe(stock.logits);
  });
});
