/**
 * One writer per run directory (docs/reliability.md): `run.lock` holds the pid, host and start time
 * of the process that owns the directory. A second run is refused with who holds it; a lock whose
 * process is gone (killed, crashed, rebooted) is taken over. The start time tells a live owner from
 * a new process that happens to reuse its pid.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { fileError, syncDirectory } from "../util/atomic-file";
import { readRegularFile } from "../util/files";

const LOCK_FILE = "run.lock";

interface LockOwner {
  pid: number;
  host: string;
  /** the owner's start time as the kernel counts it (/proc/PID/stat field 22), where there is one */
  processStart?: string;
  started: string;
  command: string;
}

/** A process's start time from /proc (Linux); undefined elsewhere or when it is gone. */
function processStart(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function isAlive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  const start = processStart(owner.pid);
  return owner.processStart === undefined || start === undefined || start === owner.processStart;
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(readRegularFile(file, "utf8")) as LockOwner;
    return Number.isInteger(owner.pid) && typeof owner.host === "string" ? owner : undefined;
  } catch {
    return undefined; // torn (a crash while writing it): nobody can own it
  }
}

export class RunLock {
  private released = false;
  private readonly releaseOnExit = () => this.release();

  private constructor(readonly file: string) {
    process.on("exit", this.releaseOnExit);
  }

  /** Takes the run directory (created if missing); `log` hears about a stale lock taken over. */
  static acquire(runDir: string, log: (line: string) => void): RunLock {
    const file = path.join(runDir, LOCK_FILE);
    const me: LockOwner = { pid: process.pid, host: os.hostname(), processStart: processStart(process.pid), started: new Date().toISOString(), command: process.argv.slice(1).join(" ") };
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(file, "wx");
        try {
          fs.writeFileSync(fd, JSON.stringify(me, null, 2) + "\n");
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        syncDirectory(runDir);
        return new RunLock(file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw fileError(error, file, "create the run lock");
      }
      const owner = readOwner(file);
      if (owner && owner.host !== me.host)
        throw new Error(
          `${runDir} is in use by pid ${owner.pid} on host ${owner.host} since ${owner.started} (${file}). ` +
            `Wait for that run, or use another run.dir; if it is certainly gone, delete ${file}`,
        );
      if (owner && isAlive(owner))
        throw new Error(`${runDir} is in use by another run: pid ${owner.pid} since ${owner.started} (\`${owner.command}\`). Wait for it to finish, or use another run.dir`);
      log(owner ? `${file}: taking over the lock of pid ${owner.pid} (started ${owner.started}), which is no longer running` : `${file}: replacing an unreadable lock file`);
      fs.rmSync(file, { force: true });
    }
    throw new Error(`${file}: another process took the run lock at the same moment; retry`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.off("exit", this.releaseOnExit);
    // Only our own lock: a takeover by another process must not be undone.
    if (readOwner(this.file)?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}
