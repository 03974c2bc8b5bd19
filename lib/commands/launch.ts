/**
 * `--nproc N`: starts N local ranks of a command the way torchrun does (docs/methods.md §13): each child
 * gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free
 * MASTER_PORT, and its share of the CPU threads. Their output lines come out prefixed by rank.
 * Ctrl-C and SIGTERM are passed on: the ranks agree on a step, rank 0 saves, the others wait for it,
 * and each exits with 130 or 143, which counts as a clean stop (the others are left to finish).
 * When a rank fails otherwise, the others are asked to stop (SIGTERM: they save what they are
 * saving) and killed after a grace period; the launcher exits with the failed rank's code.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import os from "node:os";
import readline from "node:readline";

export interface LaunchOptions {
  nproc: number;
  /** the program and arguments every rank runs */
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** default: a free port on 127.0.0.1 */
  masterPort?: number;
  /** where launcher and rank lines go (default: stderr / stdout of this process) */
  write?: (stream: "stdout" | "stderr", line: string) => void;
  /** after a failure, how long the other ranks get between SIGTERM and SIGKILL (default 30: a checkpoint being written is finished) */
  killGraceSeconds?: number;
}

/** Exit codes of a rank that stopped on a signal the run handles (docs/reliability.md): it saved first. */
const STOPPED = new Set([130, 143]);

export interface LaunchResult {
  /** 0 when every rank exited 0; the first failing rank's code (128 + signal number when killed); else a stopped rank's 130 / 143 */
  exitCode: number;
  /** the rank that failed first */
  failedRank?: number;
  pids: number[];
}

/** A TCP port that was free on 127.0.0.1 a moment ago (rank 0's store binds it next). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (os.constants.signals[signal] ?? 1) : 1);
}

export async function launchLocalRanks(options: LaunchOptions): Promise<LaunchResult> {
  const { nproc } = options;
  if (!Number.isInteger(nproc) || nproc < 1) throw new RangeError(`--nproc must be a positive integer (got ${nproc})`);
  const write = options.write ?? ((stream, line) => (stream === "stdout" ? process.stdout : process.stderr).write(line + "\n"));
  const masterPort = options.masterPort ?? (await freePort());
  const baseEnv = { ...process.env, ...options.env };
  // Each rank's intra-op threads: its share of the cores (torchrun sets OMP_NUM_THREADS likewise).
  const threads = String(Math.max(1, Math.floor(os.availableParallelism() / nproc)));
  const children: ChildProcess[] = [];
  const running = new Set<number>();
  let stopForwarded = false;
  const signalRunning = (signal: NodeJS.Signals) => () => {
    if (signal !== "SIGKILL") stopForwarded = true;
    for (const rank of running) children[rank].kill(signal);
  };
  // Ctrl-C and SIGTERM go on to the ranks (they save and stop together); a launcher that exits
  // takes them with it.
  const forwardInterrupt = signalRunning("SIGINT"), forwardTerminate = signalRunning("SIGTERM"), killAll = signalRunning("SIGKILL");
  process.on("SIGINT", forwardInterrupt);
  process.on("SIGTERM", forwardTerminate);
  process.on("exit", killAll);

  const result = await new Promise<LaunchResult>((resolve) => {
    let failure: { rank: number; code: number } | undefined;
    let stopped: number | undefined;
    const stopOthers = (failedRank: number) => {
      // Ranks already stopping on a forwarded signal would take another one as "quit at once",
      // which could cut rank 0's save short: they only get the SIGKILL after the grace period.
      if (!stopForwarded) for (const rank of running) if (rank !== failedRank) children[rank].kill("SIGTERM");
      const grace = setTimeout(() => {
        for (const rank of running) children[rank].kill("SIGKILL");
      }, (options.killGraceSeconds ?? 30) * 1000);
      grace.unref();
    };
    for (let rank = 0; rank < nproc; rank++) {
      const env: NodeJS.ProcessEnv = {
        ...baseEnv,
        RANK: String(rank),
        LOCAL_RANK: String(rank),
        WORLD_SIZE: String(nproc),
        LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(masterPort),
        OCTO_NATIVE_THREADS: baseEnv.OCTO_NATIVE_THREADS ?? threads,
      };
      // Its own process group: a terminal's Ctrl-C reaches the launcher only, which passes it on
      // once (a rank that got it twice would quit without saving).
      const child = spawn(options.command, options.args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
      children.push(child);
      running.add(rank);
      for (const stream of ["stdout", "stderr"] as const)
        readline.createInterface({ input: child[stream]! }).on("line", (line) => write(stream, `[rank ${rank}] ${line}`));
      child.on("close", (code, signal) => {
        running.delete(rank);
        const exitCode = exitCodeOf(code, signal);
        if (STOPPED.has(exitCode) && code !== null) stopped ??= exitCode;
        else if (exitCode !== 0 && !failure) {
          failure = { rank, code: exitCode };
          if (running.size > 0) {
            write("stderr", `octo-native: rank ${rank} exited with ${signal ? `signal ${signal}` : `code ${code}`}; stopping the other ranks`);
            stopOthers(rank);
          }
        }
        if (running.size === 0)
          resolve({ exitCode: failure?.code ?? stopped ?? 0, failedRank: failure?.rank, pids: children.map((c) => c.pid ?? -1) });
      });
      child.on("error", (error) => write("stderr", `octo-native: rank ${rank} could not start: ${error.message}`));
    }
    write("stderr", `octo-native: started ${nproc} ranks (pids ${children.map((c) => c.pid).join(", ")}), master 127.0.0.1:${masterPort}`);
  }).finally(() => {
    process.off("SIGINT", forwardInterrupt);
    process.off("SIGTERM", forwardTerminate);
    process.off("exit", killAll);
  });
  return result;
}
