// Sharded data parallelism (docs/methods.md §13: distributed.strategy zero2 and fsdp) with real Gloo
// processes on loopback: the same updates as ddp and as one process on the combined batch, the
// optimizer state sharded 1/W, resume at the same world size (bit for bit) and at another one
// (re-sharded), a killed rank under fsdp, and the coordinated stop of `train --nproc 2`.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import type { WorkerJob, WorkerVariant } from "../bench/data-parallel-worker";
import { freePort } from "../lib/commands/launch";
import { arithmeticProblems } from "../lib/demo/arithmetic";
import { readSafetensorsHeader } from "../lib/engine/safetensors";
import { checkCheckpoint } from "../lib/rl/checkpoint";
import type { ModelSpec } from "../lib/native";
import { TINY_SPECS } from "./helpers/tiny-models";

const ROOT = path.join(__dirname, "..");
const WORKER = path.join(ROOT, "dist", "bench", "data-parallel-worker.js");
const CLI = path.join(ROOT, "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-sharded-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// One intra-op thread per rank: up to 4 ranks share the 2 cores of CI.
const BASE_ENV = { ...process.env, OCTO_NATIVE_THREADS: "1", XDG_CACHE_HOME: path.join(tmp, "cache") };

const VARIANTS: WorkerVariant[] = [
  { name: "ddp", bucketMegabytes: 0.01, overlapBackward: true },
  { name: "zero2", bucketMegabytes: 0.01, overlapBackward: true, strategy: "zero2" }, // ~13 units of ~10 KB
  { name: "fsdp", bucketMegabytes: 0.01, overlapBackward: true, strategy: "fsdp" },
  { name: "fsdp-checkpointed", bucketMegabytes: 0.01, overlapBackward: true, strategy: "fsdp", activationCheckpointing: true },
];

function job(spec: ModelSpec, variants: WorkerVariant[], more: Partial<WorkerJob> = {}): Omit<WorkerJob, "out"> {
  return {
    mode: "train",
    spec,
    seed: 3,
    steps: 5,
    sequences: 5, // uneven over 2 ranks (3 + 2: 2 and 1 micro-batches, so rank 1 runs a padding one)
    minLength: 6,
    maxLength: 20,
    microBatchSize: 2,
    // Adam moves each weight by about lr whatever its gradient, so the rounding noise of gradients
    // that are mathematically ~0 (the k bias) becomes noise of the order of lr in the weights; at
    // this lr five steps of it stay below 1e-6 (measured: ddp itself is at 1-5e-7 from one process).
    lr: 3e-5,
    loss: { klCoef: 0.05, aggregation: "seq-mean-token-mean" },
    variants,
    timeoutSeconds: 30,
    ...more,
  };
}

function writeJob(name: string, spec: Omit<WorkerJob, "out">): string {
  const out = path.join(tmp, name);
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, "job.json");
  fs.writeFileSync(file, JSON.stringify({ ...spec, out }));
  return file;
}

interface Exit {
  code: number | null;
  stderr: string;
  stdout: string;
}

/** `world` worker ranks (torchrun's variables) on `jobFile`; none = one plain process. */
function startRanks(jobFile: string, world: number | undefined, port: number): { children: ChildProcess[]; exits: Promise<Exit>[] } {
  const children: ChildProcess[] = [];
  const exits = Array.from({ length: world ?? 1 }, (_, rank) => {
    const env = world === undefined ? BASE_ENV : { ...BASE_ENV, RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) };
    const child = spawn(process.execPath, [WORKER, jobFile], { env });
    children.push(child);
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    return new Promise<Exit>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  });
  return { children, exits };
}

async function run(jobFile: string, world?: number): Promise<void> {
  for (const exit of await Promise.all(startRanks(jobFile, world, await freePort()).exits)) {
    expect(exit.stderr).toBe("");
    expect(exit.code).toBe(0);
  }
}

type Tensors = Map<string, Float32Array>;

/** Every tensor of a safetensors file; a shard's parts (metadata `starts`) go into `into` at their place. */
function readTensors(file: string, into: Map<string, [number, Float32Array][]> = new Map()): Map<string, [number, Float32Array][]> {
  const header = readSafetensorsHeader(file);
  const bytes = fs.readFileSync(file);
  const starts = header.metadata.starts ? (JSON.parse(header.metadata.starts) as Record<string, number>) : {};
  for (const t of header.tensors) {
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + t.offset, bytes.byteOffset + t.offset + t.byteLength));
    into.set(t.name, [...(into.get(t.name) ?? []), [starts[t.name] ?? 0, values]]);
  }
  return into;
}

function assemble(parts: Map<string, [number, Float32Array][]>): Tensors {
  const out: Tensors = new Map();
  for (const [name, pieces] of parts) {
    const whole = new Float32Array(Math.max(...pieces.map(([start, v]) => start + v.length)));
    for (const [start, values] of pieces) whole.set(values, start);
    out.set(name, whole);
  }
  return out;
}

const weights = (file: string): Tensors => assemble(readTensors(file));

/** The whole AdamW state of a `state-N/<variant>` directory: one file, or the ranks' shards put together. */
function optimizerState(dir: string): Tensors {
  const index = path.join(dir, "optimizer.index.json");
  if (!fs.existsSync(index)) return weights(path.join(dir, "optimizer.safetensors"));
  const parts = new Map<string, [number, Float32Array][]>();
  for (const file of JSON.parse(fs.readFileSync(index, "utf8")).files as string[]) readTensors(path.join(dir, file), parts);
  return assemble(parts);
}

function maxAbsDifference(a: Tensors, b: Tensors): number {
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  let max = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    expect(y.length).toBe(x.length);
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i] - y[i]));
  }
  return max;
}

function reports(dir: string, rank: number, variant: string) {
  return fs.readFileSync(path.join(dir, `rank-${rank}.jsonl`), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((r) => r.variant === variant);
}

const sameBytes = (a: string, b: string) => Buffer.compare(fs.readFileSync(a), fs.readFileSync(b)) === 0;

describe.each([
  // tied embeddings (the LM head's unit holds the embedding); untied with every bias, 4 ranks on 3
  // sequences: rank 3 gets none and runs padding micro-batches only
  { name: "qwen2, 2 ranks", spec: TINY_SPECS.qwen2, world: 2, sequences: 5 },
  { name: "llama3, 4 ranks", spec: TINY_SPECS.llama3, world: 4, sequences: 3 },
])("zero2 and fsdp, $name", ({ name, spec, world, sequences }) => {
  test("match ddp and one process on the combined batch within 1e-6 after 5 steps: weights and Adam moments", async () => {
    const tag = name.replace(/\W+/g, "-");
    const single = writeJob(`single-${tag}`, job(spec, [VARIANTS[0]], { sequences }));
    const ranks = writeJob(`ranks-${tag}`, job(spec, VARIANTS, { sequences }));
    await Promise.all([run(single), run(ranks, world)]);
    const [one, many] = [path.dirname(single), path.dirname(ranks)];
    const model = (dir: string, rank: number, variant: string) => path.join(dir, `rank-${rank}`, variant, "model.safetensors");
    const reference = weights(model(one, 0, "ddp"));
    const referenceState = optimizerState(path.join(one, "state-5", "ddp"));
    for (const { name: variant } of VARIANTS) {
      // Every rank gathered the same updated shards.
      for (let rank = 1; rank < world; rank++) expect(sameBytes(model(many, 0, variant), model(many, rank, variant))).toBe(true);
      expect(maxAbsDifference(reference, weights(model(many, 0, variant)))).toBeLessThan(1e-6);
      expect(maxAbsDifference(weights(model(many, 0, "ddp")), weights(model(many, 0, variant)))).toBeLessThan(1e-6);
      const state = optimizerState(path.join(many, "state-5", variant));
      expect(maxAbsDifference(referenceState, state)).toBeLessThan(1e-6);
      // The loss and the global gradient norm (over all ranks' shards) are the combined batch's.
      const steps = reports(many, 0, variant);
      expect(steps).toHaveLength(5);
      steps.forEach((r, i) => {
        const alone = reports(one, 0, "ddp")[i];
        expect(Math.abs(r.loss - alone.loss)).toBeLessThan(1e-6);
        expect(Math.abs(r.gradNorm - alone.gradNorm) / alone.gradNorm).toBeLessThan(1e-6);
        expect(r.stats.lossTokens).toBe(alone.stats.lossTokens);
      });
    }
    // The reductions went out from the backward's hooks; fsdp gathered its layers inside the micro-batches.
    expect(reports(many, 0, "zero2").every((r) => r.communication.gradients.bucketsDuringBackward > 0)).toBe(true);
    for (const variant of ["fsdp", "fsdp-checkpointed"]) expect(reports(many, 0, variant).every((r) => r.communication.gradients.gathers > 0)).toBe(true);
  });
});

test("per rank, master and optimizer bytes fall as 1/W; fsdp's gathered parameters are a few units, not the model", async () => {
  // Untied, 6 layers: 8 fsdp units, so "a few units" is well below the whole model.
  const spec = { ...TINY_SPECS.llama3, numLayers: 6 };
  const variants = [VARIANTS[1], VARIANTS[2]];
  const dirs = await Promise.all(
    [1, 2, 4].map(async (world) => {
      const file = writeJob(`memory-${world}`, job(spec, variants, { steps: 2 }));
      await run(file, world);
      return { world, dir: path.dirname(file) };
    }),
  );
  const memoryOf = (dir: string, rank: number, variant: string) => reports(dir, rank, variant)[1].memory;
  for (const variant of ["zero2", "fsdp"]) {
    const alone = memoryOf(dirs[0].dir, 0, variant);
    for (const { world, dir } of dirs) {
      const ranks = Array.from({ length: world }, (_, rank) => memoryOf(dir, rank, variant));
      // The moments cover each value exactly once over the ranks; each unit is padded to a multiple of W.
      expect(ranks.reduce((n, m) => n + m.optimizerBytes, 0)).toBe(alone.optimizerBytes);
      for (const m of ranks) {
        expect(m.masterBytes).toBeGreaterThanOrEqual(alone.masterBytes / world);
        expect(m.masterBytes).toBeLessThanOrEqual(alone.masterBytes / world + m.units * 4);
        expect(m.optimizerBytes).toBeLessThanOrEqual(2 * (alone.masterBytes / world + m.units * 4));
        expect(m.gradientBytes).toBe(m.masterBytes);
      }
    }
  }
  // fsdp while training: at most the LM head's unit and two layers (one computing, one prefetched).
  const full = memoryOf(dirs[0].dir, 0, "fsdp").parameterBytes; // after the step the whole model is gathered again
  for (const { world, dir } of dirs)
    for (let rank = 0; rank < world; rank++) {
      const m = memoryOf(dir, rank, "fsdp");
      expect(m.units).toBe(spec.numLayers + 2);
      expect(m.peakGatheredBytes).toBeLessThanOrEqual(3 * m.largestUnitBytes);
      expect(m.peakGatheredBytes).toBeLessThan(0.6 * full);
    }
});

describe("resume", () => {
  const spec = TINY_SPECS.llama3;
  const variants = [VARIANTS[1], VARIANTS[2]];
  let first = "";
  beforeAll(async () => {
    const file = writeJob("resume-first", job(spec, variants, { saveStateAfter: 3 }));
    await run(file, 2);
    first = path.dirname(file);
  });
  const resumed = () => job(spec, variants, { resumeFrom: { dir: path.join(first, "state-3"), step: 3 } });

  test("at the same world size: bit for bit the uninterrupted run, weights and optimizer state", async () => {
    const file = writeJob("resume-same", resumed());
    await run(file, 2);
    for (const { name } of variants) {
      expect(sameBytes(path.join(first, "rank-0", name, "model.safetensors"), path.join(path.dirname(file), "rank-0", name, "model.safetensors"))).toBe(true);
      expect(maxAbsDifference(optimizerState(path.join(first, "state-5", name)), optimizerState(path.join(path.dirname(file), "state-5", name)))).toBe(0);
    }
  });

  test("at another world size (3 ranks, one process with ddp): re-sharded, within 1e-6", async () => {
    const three = writeJob("resume-three", resumed());
    const alone = writeJob("resume-alone", { ...resumed(), variants: [{ ...VARIANTS[0], name: "zero2" }] });
    await Promise.all([run(three, 3), run(alone)]);
    for (const [dir, names] of [[path.dirname(three), ["zero2", "fsdp"]], [path.dirname(alone), ["zero2"]]] as const)
      for (const name of names) {
        expect(maxAbsDifference(weights(path.join(first, "rank-0", name, "model.safetensors")), weights(path.join(dir, "rank-0", name, "model.safetensors")))).toBeLessThan(1e-6);
        expect(maxAbsDifference(optimizerState(path.join(first, "state-5", name)), optimizerState(path.join(dir, "state-5", name)))).toBeLessThan(1e-6);
      }
  });
});

test("fsdp: a killed rank makes the other exit at once with an error naming the collective", async () => {
  const long = job(TINY_SPECS.llama3, [VARIANTS[2]], { steps: 100000, timeoutSeconds: 3 });
  const { children, exits } = startRanks(writeJob("killed", long), 2, await freePort());
  await new Promise<void>((resolve) => {
    let seen = "";
    children[1].stdout!.on("data", (d) => {
      seen += d;
      if (seen.includes("step 2 done")) resolve();
    });
  });
  const killedAt = Date.now();
  children[1].kill("SIGKILL");
  const survivor = await exits[0];
  expect(survivor.code).toBe(1);
  expect(survivor.stderr).toMatch(/^octo-native: rank 0 of 2: .* failed: a peer rank exited or did not answer within the 3 s timeout/);
  expect((Date.now() - killedAt) / 1000).toBeLessThan(3 + 10);
});

test("train --nproc 2 with fsdp: Ctrl-C stops both ranks after the same step with a consolidated checkpoint and the ranks' shards; --resume continues", async () => {
  const data = path.join(tmp, "arithmetic.jsonl");
  fs.writeFileSync(data, arithmeticProblems(30, 5).map((e) => JSON.stringify({ problem: e.problem, answer: e.answer })).join("\n") + "\n");
  const runDir = path.join(tmp, "run-fsdp");
  const train = (steps: number, onLine: (line: string, child: ChildProcess) => void, ...args: string[]) =>
    new Promise<Exit>((resolve) => {
      const settings = [
        "model.path=demo", `data.train.path=${data}`, `run.dir=${runDir}`, `run.steps=${steps}`, "rollout.promptsPerStep=3",
        "rollout.samplesPerPrompt=2", "rollout.maxNewTokens=24", "distributed.timeoutSeconds=60", "distributed.strategy=fsdp",
      ].flatMap((s) => ["--set", s]);
      const child = spawn(process.execPath, [CLI, "train", "--config", path.join(ROOT, "configs", "demo.yaml"), ...settings, "--nproc", "2", ...args], { env: BASE_ENV });
      let stdout = "", stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => {
        stderr += d;
        for (const line of String(d).split("\n")) onLine(line, child);
      });
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
  let signalled = false;
  const stopped = await train(50, (line, child) => {
    if (!signalled && /^\[rank 0\] step 1\/50/.test(line)) {
      signalled = true;
      child.kill("SIGINT");
    }
  });
  expect(stopped.code).toBe(130);
  const [report] = stopped.stdout.split("\n").filter((l) => /^\[rank 0\] \{/.test(l)).map((l) => JSON.parse(l.replace(/^\[rank 0\] /, "")));
  expect(report.interrupted).toBe(true);
  const checkpoint = report.checkpoint as string;
  expect(checkCheckpoint(checkpoint)).toHaveProperty("state.step", report.steps);
  const index = JSON.parse(fs.readFileSync(path.join(checkpoint, "optimizer.index.json"), "utf8"));
  expect(index).toMatchObject({ strategy: "fsdp", worldSize: 2, files: ["optimizer-rank-00000-of-00002.safetensors", "optimizer-rank-00001-of-00002.safetensors"] });
  // The model is consolidated: every tensor whole, in the Hugging Face layout.
  const config = JSON.parse(fs.readFileSync(path.join(checkpoint, "config.json"), "utf8"));
  const embedding = readSafetensorsHeader(path.join(checkpoint, "model.safetensors")).tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  expect(embedding.shape).toEqual([config.vocab_size, config.hidden_size]);

  const resumed = await train(report.steps + 1, () => {}, "--resume");
  expect(resumed.code).toBe(0);
  expect(resumed.stderr).toContain(`resuming ${runDir} from step ${report.steps}`);
});
