// Data-parallel training (docs/methods.md §13) with real processes on loopback: 2 Gloo ranks against one
// process on the combined batch, a rank killed or hung mid-run, the --nproc launcher, and a
// short `train --nproc 2` run with resume.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import type { WorkerJob } from "../bench/data-parallel-worker";
import { freePort, launchLocalRanks } from "../lib/commands/launch";
import { arithmeticProblems } from "../lib/demo/arithmetic";
import { DataParallel, torchrunEnv } from "../lib/engine/distributed";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { TINY_SPECS } from "./helpers/tiny-models";

const ROOT = path.join(__dirname, "..");
const WORKER = path.join(ROOT, "dist", "bench", "data-parallel-worker.js");
const CLI = path.join(ROOT, "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-dist-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Each rank gets one intra-op thread: 2 ranks share the 2 cores of CI.
const BASE_ENV = { ...process.env, OCTO_NATIVE_THREADS: "1", XDG_CACHE_HOME: path.join(tmp, "cache") };

function writeJob(name: string, job: Omit<WorkerJob, "out">): string {
  const out = path.join(tmp, name);
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, "job.json");
  fs.writeFileSync(file, JSON.stringify({ ...job, out }));
  return file;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
  seconds: number;
}

/** Starts `world` worker ranks (torchrun's variables) on `jobFile`; none = one plain process. */
function startRanks(jobFile: string, world: number | undefined, port: number): { children: ChildProcess[]; exits: Promise<Exit>[] } {
  const ranks = world ?? 1;
  const children: ChildProcess[] = [];
  const exits = Array.from({ length: ranks }, (_, rank) => {
    const env = world === undefined ? BASE_ENV : { ...BASE_ENV, RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) };
    const child = spawn(process.execPath, [WORKER, jobFile], { env });
    children.push(child);
    const started = Date.now();
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    return new Promise<Exit>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000 })));
  });
  return { children, exits };
}

function readWeights(file: string): Map<string, Float32Array> {
  const header = readSafetensorsHeader(file);
  const bytes = fs.readFileSync(file);
  const out = new Map<string, Float32Array>();
  for (const t of header.tensors) out.set(t.name, new Float32Array(bytes.buffer.slice(bytes.byteOffset + t.offset, bytes.byteOffset + t.offset + t.byteLength)));
  return out;
}

function maxAbsDifference(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let max = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    expect(y.length).toBe(x.length);
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i] - y[i]));
  }
  return max;
}

function stepReports(dir: string, rank: number, variant: string) {
  return fs
    .readFileSync(path.join(dir, `rank-${rank}.jsonl`), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((r) => r.variant === variant);
}

const TRAIN_JOB: Omit<WorkerJob, "out"> = {
  mode: "train",
  spec: TINY_SPECS.qwen2, // tied embeddings: the embedding and the LM head share one gradient
  seed: 3,
  steps: 3,
  sequences: 5, // uneven: rank 0 trains on 3, rank 1 on 2
  minLength: 6,
  maxLength: 20,
  microBatchSize: 2,
  // Adam turns the rounding noise of gradients that are mathematically ~0 (the k bias) into
  // updates of ±lr; at this lr that noise stays below 1e-6 (one process with another micro-batch
  // size differs from itself as much).
  lr: 1e-4,
  loss: { klCoef: 0.05, aggregation: "seq-mean-token-mean" },
  variants: [
    { name: "overlap", bucketMegabytes: 0.01, overlapBackward: true }, // ~13 buckets, launched from the backward
    { name: "after-backward", bucketMegabytes: 25, overlapBackward: false }, // one bucket, after the backward
  ],
  timeoutSeconds: 30,
};

describe("2 Gloo ranks on loopback", () => {
  test("end bit-identical on both ranks and within 1e-6 of one process on the combined batch", async () => {
    const single = writeJob("single", TRAIN_JOB);
    const pair = writeJob("pair", TRAIN_JOB);
    const one = startRanks(single, undefined, 0);
    const two = startRanks(pair, 2, await freePort());
    for (const exit of await Promise.all([...one.exits, ...two.exits])) {
      expect(exit.stderr).toBe("");
      expect(exit.code).toBe(0);
    }
    const dirOf = (job: string) => path.dirname(job);
    const weights = (job: string, rank: number, variant: string) => path.join(dirOf(job), `rank-${rank}`, variant, "model.safetensors");
    for (const variant of ["overlap", "after-backward"]) {
      // The ranks hold the same bytes: the all-reduced sum is the same on both, then clip + AdamW are deterministic.
      expect(Buffer.compare(fs.readFileSync(weights(pair, 0, variant)), fs.readFileSync(weights(pair, 1, variant)))).toBe(0);
      const distance = maxAbsDifference(readWeights(weights(pair, 0, variant)), readWeights(weights(single, 0, variant)));
      expect(distance).toBeLessThan(1e-6);
    }
    // Bucketing and overlap change nothing: the buckets hold the same sums either way.
    expect(Buffer.compare(fs.readFileSync(weights(pair, 0, "overlap")), fs.readFileSync(weights(pair, 0, "after-backward")))).toBe(0);

    // Step by step, the loss and the global gradient norm (before clipping at 1) are the combined batch's.
    const reference = stepReports(dirOf(single), 0, "overlap");
    for (const rank of [0, 1]) {
      const reports = stepReports(dirOf(pair), rank, "overlap");
      expect(reports).toHaveLength(3);
      reports.forEach((r, i) => {
        expect(r.stats.lossTokens).toBe(reference[i].stats.lossTokens);
        expect(r.tokens).toBe(reference[i].tokens);
        expect(Math.abs(r.loss - reference[i].loss)).toBeLessThan(1e-6);
        expect(Math.abs(r.gradNorm - reference[i].gradNorm) / reference[i].gradNorm).toBeLessThan(1e-6);
        expect(r.communication.gradients.buckets).toBeGreaterThan(5);
      });
    }
    // Clipping was exercised. Built inputs, nothing sampled: the norms are 1.44-1.80 on every machine.
    expect(reference.some((r) => r.gradNorm > 1)).toBe(true);
    // With overlap, the buckets went out from the backward's hooks.
    expect(stepReports(dirOf(pair), 0, "overlap").every((r) => r.communication.gradients.bucketsDuringBackward > 0)).toBe(true);
    expect(stepReports(dirOf(pair), 0, "after-backward").every((r) => r.communication.gradients.bucketsDuringBackward === 0)).toBe(true);
  });
});

test("a rank with no sequences in a step still takes the step with the others", async () => {
  const job = { ...TRAIN_JOB, steps: 2, sequences: 1, variants: [TRAIN_JOB.variants[0]] }; // rank 1 gets nothing
  const single = writeJob("single-one", job), pair = writeJob("pair-one", job);
  const exits = [...startRanks(single, undefined, 0).exits, ...startRanks(pair, 2, await freePort()).exits];
  for (const exit of await Promise.all(exits)) expect(exit.code).toBe(0);
  const weights = (job: string, rank: number) => path.join(path.dirname(job), `rank-${rank}`, "overlap", "model.safetensors");
  expect(Buffer.compare(fs.readFileSync(weights(pair, 0)), fs.readFileSync(weights(pair, 1)))).toBe(0);
  expect(maxAbsDifference(readWeights(weights(pair, 1)), readWeights(weights(single, 0)))).toBeLessThan(1e-6);
});

describe("a rank that dies or hangs stops the others with a clear error", () => {
  const LONG_JOB: Omit<WorkerJob, "out"> = { ...TRAIN_JOB, steps: 100000, variants: [TRAIN_JOB.variants[0]], timeoutSeconds: 3 };

  async function runUntilFirstStep(name: string) {
    const { children, exits } = startRanks(writeJob(name, LONG_JOB), 2, await freePort());
    await new Promise<void>((resolve) => {
      let seen = "";
      children[1].stdout!.on("data", (d) => {
        seen += d;
        if (seen.includes("step 2 done")) resolve();
      });
    });
    return { children, exits };
  }

  test("killed: the survivor exits non-zero at once, naming the failed collective", async () => {
    const { children, exits } = await runUntilFirstStep("killed");
    const killedAt = Date.now();
    children[1].kill("SIGKILL");
    const survivor = await exits[0];
    expect(survivor.code).toBe(1);
    expect(survivor.stderr).toMatch(/^octo-native: rank 0 of 2: .* failed: a peer rank exited or did not answer within the 3 s timeout/);
    expect((Date.now() - killedAt) / 1000).toBeLessThan(3 + 10);
  });

  test("hung (stopped): the survivor exits non-zero after the timeout", async () => {
    const { children, exits } = await runUntilFirstStep("hung");
    children[1].kill("SIGSTOP");
    const stoppedAt = Date.now();
    try {
      const survivor = await exits[0];
      expect(survivor.code).toBe(1);
      expect(survivor.stderr).toMatch(/rank 0 of 2: .* failed: a peer rank exited or did not answer within the 3 s timeout/);
      expect((Date.now() - stoppedAt) / 1000).toBeLessThan(3 + 10);
    } finally {
      children[1].kill("SIGKILL");
      await exits[1];
    }
  });
});

describe("the --nproc launcher", () => {
  test("sets torchrun's variables per rank and prefixes each rank's lines", async () => {
    const lines: string[] = [];
    const script = "console.log([process.env.RANK, process.env.LOCAL_RANK, process.env.WORLD_SIZE, process.env.MASTER_ADDR, process.env.MASTER_PORT > 0].join(' '))";
    const result = await launchLocalRanks({ nproc: 3, command: process.execPath, args: ["-e", script], write: (_, line) => lines.push(line) });
    expect(result.exitCode).toBe(0);
    for (const rank of [0, 1, 2]) expect(lines).toContain(`[rank ${rank}] ${rank} ${rank} 3 127.0.0.1 true`);
  });

  test("when one rank fails, stops the others and exits with its code", async () => {
    const lines: string[] = [];
    // Rank 1 fails at once; the others would run for a minute.
    const script = "if (process.env.RANK === '1') { console.error('boom'); process.exit(3) } setTimeout(() => {}, 60000)";
    const started = Date.now();
    const result = await launchLocalRanks({ nproc: 3, command: process.execPath, args: ["-e", script], write: (_, line) => lines.push(line) });
    expect(result.exitCode).toBe(3);
    expect(result.failedRank).toBe(1);
    expect(lines).toContain("[rank 1] boom");
    expect(lines.some((l) => /rank 1 exited with code 3; stopping the other ranks/.test(l))).toBe(true);
    expect((Date.now() - started) / 1000).toBeLessThan(30);
    for (const pid of result.pids) expect(() => process.kill(pid, 0)).toThrow(); // none left running
  });
});

describe("torchrun's variables", () => {
  test("are read and checked, naming the variable", () => {
    expect(torchrunEnv({})).toBeUndefined();
    expect(torchrunEnv({ WORLD_SIZE: "2", RANK: "1", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "1234" })).toEqual({ rank: 1, worldSize: 2, localRank: 1, masterAddr: "10.0.0.1", masterPort: 1234 });
    expect(torchrunEnv({ WORLD_SIZE: "4", RANK: "3", LOCAL_RANK: "1" })).toMatchObject({ localRank: 1, masterAddr: "127.0.0.1", masterPort: 29500 });
    expect(() => torchrunEnv({ WORLD_SIZE: "2" })).toThrow(/RANK must be too/);
    expect(() => torchrunEnv({ WORLD_SIZE: "2", RANK: "2" })).toThrow(/RANK=2 must be below WORLD_SIZE=2/);
    expect(() => torchrunEnv({ WORLD_SIZE: "two", RANK: "0" })).toThrow(/WORLD_SIZE=two: expected an integer/);
  });

  test("a rank that finds no peers fails after the rendezvous timeout", async () => {
    const env = { rank: 1, worldSize: 2, localRank: 1, masterAddr: "127.0.0.1", masterPort: await freePort() };
    await expect(DataParallel.join(env, { timeoutSeconds: 1 })).rejects.toThrow(/rank 1 of 2: the rendezvous at 127\.0\.0\.1:\d+ did not complete within 1 s/);
  });
});

test("a closed group refuses further collectives, naming them", async () => {
  const env = { rank: 0, worldSize: 1, localRank: 0, masterAddr: "127.0.0.1", masterPort: await freePort() };
  const dp = await DataParallel.join(env, { timeoutSeconds: 10 });
  expect(await dp.sum([2, 3], "a sum")).toEqual([2, 3]);
  dp.close();
  dp.close();  // idempotent
  await expect(dp.sum([1], "the agreement on stopping")).rejects.toThrow(/the agreement on stopping: this process group was shut down/);
});

describe("octo-native train --nproc 2", () => {
  const data = path.join(tmp, "arithmetic.jsonl");
  const runDir = path.join(tmp, "run-nproc");
  const settings = [
    "model.path=demo", `data.train.path=${data}`, `run.dir=${runDir}`, "run.steps=2", "run.saveEvery=1",
    "rollout.promptsPerStep=3", "rollout.samplesPerPrompt=2", "rollout.maxNewTokens=24", "distributed.timeoutSeconds=60",
  ].flatMap((s) => ["--set", s]);
  const train = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, "train", "--config", path.join(ROOT, "configs", "demo.yaml"), ...settings, ...args], { encoding: "utf8", env: BASE_ENV, timeout: 300_000 });

  beforeAll(() => fs.writeFileSync(data, arithmeticProblems(30, 5).map((e) => JSON.stringify({ problem: e.problem, answer: e.answer })).join("\n") + "\n"));

  test("trains with rank 0 writing, resumes at the same world size, refuses another", () => {
    const first = train("--nproc", "2");
    expect(first.stderr).toMatch(/started 2 ranks/);
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/^\[rank 0\] \{"runDir"/m);
    const metrics = () => fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(metrics().map((m) => m.step)).toEqual([1, 2]);
    // 3 prompts over 2 ranks, whole groups of 2n = 4 (originals + Octopus pairs), counted over both ranks.
    for (const m of metrics()) expect(m.trainedSequences).toBe(3 * 4);
    const state = JSON.parse(fs.readFileSync(path.join(runDir, "checkpoints", "step-000002", "trainer_state.json"), "utf8"));
    expect(state.worldSize).toBe(2);
    expect(state.cursor.position).toBe(6); // every rank advanced the cursor by the step's 3 prompts

    const resumed = train("--nproc", "2", "--resume", "--set", "run.steps=3");
    expect(resumed.status).toBe(0);
    expect(metrics().map((m) => m.step)).toEqual([1, 2, 3]);

    const alone = train("--resume", "--set", "run.steps=4");
    expect(alone.status).toBe(1);
    expect(alone.stderr).toMatch(/step-000003 was written by a run of 2 rank\(s\) but this run has 1: resume it at the same world size \(--nproc 2/);
  });
});
