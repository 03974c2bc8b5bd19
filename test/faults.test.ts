// Faults a week-long run meets, injected into the real CLI (docs/reliability.md): Ctrl-C and
// SIGTERM at chosen points (OCTO_NATIVE_PAUSE_AT holds a process inside a save), kill -9, a rank
// killed during a coordinated stop, a full disk, a second run on the same directory, a damaged
// checkpoint and metrics line, a changed config on resume; and model.save into a used directory.
import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems } from "../lib/demo/arithmetic";
import { Model } from "../lib/engine/model";
import { checkCheckpoint } from "../lib/rl/checkpoint";
import { RunLock } from "../lib/rl/run-lock";
import { TINY_SPECS } from "./helpers/tiny-models";

const ROOT = path.join(__dirname, "..");
const CLI = path.join(ROOT, "dist", "lib", "commands", "cli.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-faults-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// One intra-op thread per process: two ranks (or two runs) share CI's 2 cores. The demo model is
// created once into this cache.
const ENV = { ...process.env, OCTO_NATIVE_THREADS: "1", XDG_CACHE_HOME: path.join(tmp, "cache") };
const data = path.join(tmp, "arithmetic.jsonl");
beforeAll(() => fs.writeFileSync(data, arithmeticProblems(40, 5).map((e) => JSON.stringify({ problem: e.problem, answer: e.answer })).join("\n") + "\n"));

/** `train` on the demo model with small rollouts: `steps` RL steps into `runDir`, more `--set`s, then other options (`--resume`, `--nproc 2`). */
function trainArgs(runDir: string, steps: number, sets: string[] = [], options: string[] = []): string[] {
  const settings = [
    "model.path=demo", `data.train.path=${data}`, `run.dir=${runDir}`, `run.steps=${steps}`,
    "rollout.promptsPerStep=2", "rollout.samplesPerPrompt=2", "rollout.maxNewTokens=24", "distributed.timeoutSeconds=60",
  ];
  return [CLI, "train", "--config", path.join(ROOT, "configs", "demo.yaml"), "--set", ...settings, ...sets, ...options];
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `onLine` sees every output line (stdout and stderr) and may signal the child. */
function runCli(argv: string[], onLine: (line: string, child: ChildProcess) => void = () => {}, env: NodeJS.ProcessEnv = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { env: { ...ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const out = { stdout: "", stderr: "" };
    for (const stream of ["stdout", "stderr"] as const) {
      let pending = "";
      child[stream].on("data", (d) => {
        out[stream] += d;
        pending += d;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) onLine(line, child);
      });
    }
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, ...out }));
  });
}

const checkpoints = (runDir: string) => (fs.existsSync(path.join(runDir, "checkpoints")) ? fs.readdirSync(path.join(runDir, "checkpoints")).sort() : []);
const metricsSteps = (runDir: string) =>
  fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { step: number }).step);
const PAUSE_IN_SAVE = { OCTO_NATIVE_PAUSE_AT: "checkpoint-model-written", OCTO_NATIVE_PAUSE_MS: "1500" };
const NO_STACK_TRACE = /at .*\.js:\d+/;

describe("signals", () => {
  test("SIGTERM (a scheduler's stop) during a save: the save finishes, the run stops after its step with a checkpoint, exit 143", async () => {
    // Before: exit 143 at once, no checkpoint, no message.
    const runDir = path.join(tmp, "sigterm");
    let signalled = false;
    const run = await runCli(trainArgs(runDir, 50, ["run.saveEvery=1"]), (line, child) => {
      if (!signalled && line.includes("paused at checkpoint-model-written")) {
        signalled = true;
        child.kill("SIGTERM");
      }
    }, PAUSE_IN_SAVE);
    expect(signalled).toBe(true);
    expect(run.stderr).toMatch(/SIGTERM: finishing this step, then saving a checkpoint/);
    expect(run.code).toBe(143);
    const report = JSON.parse(run.stdout);
    // Signalled inside step 1's save: that save completes, step 2 runs, and its checkpoint ends the run.
    expect(report).toMatchObject({ steps: 2, interrupted: true });
    expect(checkpoints(runDir)).toEqual(["step-000001", "step-000002"]);
    for (const step of ["step-000001", "step-000002"]) expect(checkCheckpoint(path.join(runDir, "checkpoints", step))).toHaveProperty("state");
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "summary.json"), "utf8")).interrupted).toBe(true);
    expect(fs.existsSync(path.join(runDir, "run.lock"))).toBe(false);
  });

  test("kill -9 inside a save: the next run removes the staging directory, takes over the lock, and starts cleanly", async () => {
    // Before: the .partial-PID directory stayed for good (one such leftover filled a tmpfs).
    const runDir = path.join(tmp, "killed");
    let killedPid = 0;
    const killed = await runCli(trainArgs(runDir, 50, ["run.saveEvery=1"]), (line, child) => {
      if (!killedPid && line.includes("paused at checkpoint-model-written")) {
        killedPid = child.pid!;
        child.kill("SIGKILL");
      }
    }, PAUSE_IN_SAVE);
    expect(killed.signal).toBe("SIGKILL");
    const leftover = checkpoints(runDir);
    expect(leftover).toHaveLength(1);
    expect(leftover[0]).toMatch(new RegExp(`^step-000001\\.partial-${killedPid}-`));
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "run.lock"), "utf8")).pid).toBe(killedPid);

    const next = await runCli(trainArgs(runDir, 1, [], ["--resume"]));
    expect(next.code).toBe(0);
    expect(next.stderr).toContain(`taking over the lock of pid ${killedPid}`);
    expect(next.stderr).toMatch(/removed .*step-000001\.partial-\d+-\w+, left by an interrupted write/);
    expect(next.stderr).toContain("no checkpoint in");
    expect(checkpoints(runDir)).toEqual(["step-000001"]);
  });

  test("a second run on the same run directory is refused while the first is alive, and touches nothing", async () => {
    // Before: both ran, their checkpoints and metrics.jsonl interleaved, config.yaml was overwritten.
    const runDir = path.join(tmp, "locked");
    let second: SpawnSyncReturns<string> | undefined;
    const first = await runCli(trainArgs(runDir, 50), (line, child) => {
      if (/^step 1\/50/.test(line) && !second) {
        second = spawnSync(process.execPath, trainArgs(runDir, 3, ["optimizer.lr=0.001"]), { env: ENV, encoding: "utf8" });
        child.kill("SIGINT");
      }
    });
    expect(second!.status).toBe(1);
    expect(second!.stderr).toMatch(new RegExp(`${runDir} is in use by another run: pid \\d+ since .*\\. Wait for it to finish, or use another run.dir`));
    expect(second!.stderr).not.toMatch(NO_STACK_TRACE);
    expect(first.code).toBe(130);
    const steps = JSON.parse(first.stdout).steps;
    expect(metricsSteps(runDir)).toEqual(Array.from({ length: steps }, (_, i) => i + 1));
    expect(fs.readFileSync(path.join(runDir, "config.yaml"), "utf8")).toContain("lr: 0.00005");
  });
});

describe("train --nproc 2: a coordinated stop", () => {
  test("Ctrl-C: every rank stops after the same step, rank 0's save is not cut short, exit 130; --resume continues", async () => {
    // Before: rank 1 exited 130 at once, the launcher SIGTERMed rank 0 inside its save, and a
    // half-written step-N.partial was left while rank 1 reported step-N.
    const runDir = path.join(tmp, "nproc-stop");
    let signalled = false;
    const run = await runCli(trainArgs(runDir, 50, [], ["--nproc", "2"]), (line, child) => {
      if (!signalled && /^\[rank 0\] step 1\/50/.test(line)) {
        signalled = true;
        child.kill("SIGINT");
      }
    }, PAUSE_IN_SAVE);
    expect(signalled).toBe(true);
    expect(run.stderr).not.toMatch(/stopping the other ranks/);
    expect(run.code).toBe(130);
    const reports = run.stdout.split("\n").filter((l) => /^\[rank \d\] \{/.test(l)).map((l) => JSON.parse(l.replace(/^\[rank \d\] /, "")));
    expect(reports).toHaveLength(2);
    expect(reports[1].checkpoint).toBe(reports[0].checkpoint);
    expect(checkCheckpoint(reports[0].checkpoint)).toHaveProperty("state.step", reports[0].steps);
    expect(checkpoints(runDir)).toEqual([path.basename(reports[0].checkpoint)]);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, "summary.json"), "utf8")).interrupted).toBe(true);

    const resumed = await runCli(trainArgs(runDir, reports[0].steps + 1, [], ["--nproc", "2", "--resume"]));
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain(`resuming ${runDir} from step ${reports[0].steps}`);
    expect(metricsSteps(runDir)).toEqual(Array.from({ length: reports[0].steps + 1 }, (_, i) => i + 1));
  });

  test("a rank killed while rank 0 saves: the checkpoint is still completed, the launcher exits with the killed rank's code", async () => {
    const runDir = path.join(tmp, "nproc-killed");
    let pids: number[] = [];
    let signalled = false, killed = false;
    const run = await runCli(trainArgs(runDir, 50, [], ["--nproc", "2"]), (line, child) => {
      const started = /started 2 ranks \(pids (\d+), (\d+)\)/.exec(line);
      if (started) pids = [Number(started[1]), Number(started[2])];
      if (!signalled && /^\[rank 0\] step 1\/50/.test(line)) {
        signalled = true;
        child.kill("SIGINT");
      }
      if (!killed && /^\[rank 0\] octo-native: paused at checkpoint-model-written/.test(line)) {
        killed = true;
        process.kill(pids[1], "SIGKILL");
      }
    }, PAUSE_IN_SAVE);
    expect(killed).toBe(true);
    expect(run.code).toBe(137);
    expect(run.stderr).toMatch(/rank 1 exited with signal SIGKILL/);
    const complete = checkpoints(runDir);
    expect(complete).toHaveLength(1);
    expect(complete[0]).toMatch(/^step-\d{6}$/);
    expect(checkCheckpoint(path.join(runDir, "checkpoints", complete[0]))).toHaveProperty("state");
  });
});

describe("a full disk (ENOSPC on a small tmpfs)", () => {
  const mount = path.join(tmp, "small-disk");
  let mounted = false;
  beforeAll(() => {
    fs.mkdirSync(mount, { recursive: true });
    try {
      // ~2 demo checkpoints (model + optimizer state ≈ 9 MB each) fit, the third does not.
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mount], { stdio: "pipe" });
      mounted = true;
    } catch (error) {
      console.log(`skipping the ENOSPC test: cannot mount a tmpfs here (${(error as Error).message.split("\n")[0]}); it needs root`);
    }
  });
  afterAll(() => mounted && execFileSync("umount", [mount]));

  test("the error names the file; after space is freed, --resume goes on from the last complete checkpoint", async () => {
    if (!mounted) return;
    // Before: the message named no file, a torn metrics line blocked the resume, staging leaked.
    const runDir = path.join(mount, "run");
    const full = await runCli(trainArgs(runDir, 50, ["run.saveEvery=1"]));
    expect(full.code).toBe(1);
    expect(full.stderr).toMatch(new RegExp(`${mount}/run/\\S+.*(ENOSPC|No space left on device)`));
    expect(full.stderr).not.toMatch(NO_STACK_TRACE);
    const complete = checkpoints(runDir).filter((d) => /^step-\d{6}$/.test(d));
    expect(complete.length).toBeGreaterThanOrEqual(1);
    const last = Number(complete[complete.length - 1].slice(5));

    execFileSync("mount", ["-o", "remount,size=256m", mount]);
    const resumed = await runCli(trainArgs(runDir, last + 1, [], ["--resume"]));
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain(`resuming ${runDir} from step ${last}`);
    expect(metricsSteps(runDir)).toEqual(Array.from({ length: last + 1 }, (_, i) => i + 1));
    expect(checkpoints(runDir).filter((d) => !/^step-\d{6}$/.test(d))).toEqual([]);
  });
});

describe("resume", () => {
  const runDir = path.join(tmp, "resume");
  // Its own copy of the data: the last test cuts it in place, as a user editing the file would.
  const ownData = path.join(tmp, "resume-data.jsonl");
  const args = (steps: number, sets: string[] = [], options: string[] = []) => trainArgs(runDir, steps, [`data.train.path=${ownData}`, ...sets], options);
  beforeAll(async () => {
    fs.copyFileSync(data, ownData);
    const first = await runCli(args(2, ["run.saveEvery=1"]));
    expect(first.code).toBe(0);
  });

  test("past a damaged newest checkpoint and a torn metrics line, with a warning naming what was skipped", async () => {
    // Before: `Unexpected end of JSON input` naming no file, and the intact step-1 checkpoint was not used;
    // a torn metrics line gave `Expected ',' or '}' after property value in JSON at position 248`.
    fs.writeFileSync(path.join(runDir, "checkpoints", "step-000002", "trainer_state.json"), "");
    fs.appendFileSync(path.join(runDir, "metrics.jsonl"), '{"step":3,"reward":0.');
    const resumed = await runCli(args(2, [], ["--resume"]));
    expect(resumed.stderr).toMatch(/warning: skipping checkpoint \S+step-000002, which is damaged: \S+step-000002\/trainer_state\.json: not valid JSON/);
    expect(resumed.stderr).toContain(`resuming ${runDir} from step 1`);
    expect(resumed.stderr).toMatch(/metrics\.jsonl: kept 1 line\(s\) up to step 1 \(the checkpoint's\), dropped 1 line\(s\) of steps after 1 and a damaged line 3/);
    expect(resumed.code).toBe(0);
    expect(metricsSteps(runDir)).toEqual([1, 2]);
    expect(checkCheckpoint(path.join(runDir, "checkpoints", "step-000002"))).toHaveProperty("state.step", 2);
  });

  test("with a changed config or training set: refused with the changed keys unless --allow-config-change, which keeps the old config", async () => {
    // Before: a cut dataset, lr ×200, another promptsPerStep or model.path all resumed silently.
    const refused = await runCli(args(3, ["optimizer.lr=0.01", "rollout.promptsPerStep=3"], ["--resume"]));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("optimizer.lr: 0.00005 → 0.01");
    expect(refused.stderr).toContain("rollout.promptsPerStep: 2 → 3");
    expect(refused.stderr).toContain("--allow-config-change");
    expect(refused.stderr).not.toMatch(/run\.steps/); // extending the run is not a change of the run
    expect(fs.readFileSync(path.join(runDir, "config.yaml"), "utf8")).toContain("lr: 0.00005");

    fs.writeFileSync(ownData, fs.readFileSync(data, "utf8").split("\n").slice(0, 20).join("\n") + "\n");
    const otherData = await runCli(args(3, [], ["--resume"]));
    expect(otherData.code).toBe(1);
    expect(otherData.stderr).toMatch(/the training set: 40 examples \(sha256 \w+…\) at the checkpoint, 20 \(sha256 \w+…\) now/);

    const allowed = await runCli(args(3, ["optimizer.lr=0.01"], ["--resume", "--allow-config-change"]));
    expect(allowed.code).toBe(0);
    expect(allowed.stderr).toContain("resume with a changed run (allowed): optimizer.lr: 0.00005 → 0.01");
    expect(fs.readFileSync(path.join(runDir, "config.until-step-000002.yaml"), "utf8")).toContain("lr: 0.00005");
    expect(fs.readFileSync(path.join(runDir, "config.yaml"), "utf8")).toContain("lr: 0.01");
  });
});

describe("the run lock", () => {
  test("held by a live process: refused, naming it; left by a dead one or another host: taken over / refused with what to do", () => {
    const runDir = fs.mkdtempSync(path.join(tmp, "lock-"));
    const log: string[] = [];
    const lock = RunLock.acquire(runDir, (l) => log.push(l));
    expect(() => RunLock.acquire(runDir, () => {})).toThrow(new RegExp(`in use by another run: pid ${process.pid}`));
    lock.release();

    // A process that has exited: its lock is stale.
    const dead = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
    const deadPid = Number(dead.stdout.trim());
    fs.writeFileSync(path.join(runDir, "run.lock"), JSON.stringify({ pid: deadPid, host: os.hostname(), started: "earlier", command: "train" }));
    RunLock.acquire(runDir, (l) => log.push(l)).release();
    expect(log).toContain(`${path.join(runDir, "run.lock")}: taking over the lock of pid ${deadPid} (started earlier), which is no longer running`);

    fs.writeFileSync(path.join(runDir, "run.lock"), JSON.stringify({ pid: 1, host: "other-node", started: "earlier", command: "train" }));
    expect(() => RunLock.acquire(runDir, () => {})).toThrow(/in use by pid 1 on host other-node since earlier .* if it is certainly gone, delete .*run\.lock/);
  });
});

describe("model.save into a directory that holds files", () => {
  test("refuses without overwrite; with it replaces only the model's own files", async () => {
    // Before: save silently deleted optimizer.safetensors and an unrelated other-weights.safetensors.
    const dir = path.join(tmp, "used");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "optimizer.safetensors"), "keep me");
    fs.writeFileSync(path.join(dir, "other-weights.safetensors"), "keep me too");
    const model = await Model.create(TINY_SPECS.qwen3, 1, { device: "cpu" });
    try {
      await expect(model.save(dir)).rejects.toThrow(/cannot save a model to .*used: the directory already holds .*optimizer\.safetensors.*overwrite/);
      expect(fs.readdirSync(dir).sort()).toEqual(["optimizer.safetensors", "other-weights.safetensors"]);

      // A sharded save, then an unsharded one over it: the old shards and index go, the rest stays.
      await model.save(dir, { overwrite: true, maxShardBytes: 1024 });
      expect(fs.readdirSync(dir).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
      await model.save(dir, { overwrite: true });
      expect(fs.readdirSync(dir).sort()).toEqual(["config.json", "model.safetensors", "optimizer.safetensors", "other-weights.safetensors"]);
      expect(fs.readFileSync(path.join(dir, "optimizer.safetensors"), "utf8")).toBe("keep me");

      // In place, as a checkpoint is re-saved: still loads, keeps its neighbours.
      const loaded = await Model.load(dir, { device: "cpu" });
      await loaded.save(dir, { overwrite: true });
      loaded.dispose();
      expect(fs.readdirSync(dir).sort()).toEqual(["config.json", "model.safetensors", "optimizer.safetensors", "other-weights.safetensors"]);
      (await Model.load(dir, { device: "cpu" })).dispose();
    } finally {
      model.dispose();
    }
  });
});
