/**
 * Staging directories and temp files: everything is written beside its final name first and
 * renamed into place (docs/reliability.md). Their names carry the writer's pid, so what a killed
 * writer left behind (kill -9, a full disk, a power cut) can be told apart and removed by the next
 * run or save instead of filling the disk.
 */
import fs from "node:fs";
import path from "node:path";

const STAGING_NAME = /\.(partial|tmp|old)-(\d+)(-[0-9a-z]+)?$/;

/** A fresh staging name beside `target`: `target.KIND-PID-TIME`. */
export function stagingName(target: string, kind: "partial" | "tmp" | "old"): string {
  return `${target}.${kind}-${process.pid}-${Date.now().toString(36)}`;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes the staging entries in `dir` that another writer left: all of them when the caller holds
 * the directory's lock (no one else may write there), else only those of processes no longer
 * running on this host. Returns what was removed.
 */
export function removeStaleStaging(dir: string, options: { locked: boolean; only?: (name: string) => boolean }): string[] {
  if (!fs.existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const match = STAGING_NAME.exec(name);
    if (!match || (options.only && !options.only(name))) continue;
    const pid = Number(match[2]);
    if (pid === process.pid || (!options.locked && isRunning(pid))) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed.push(path.join(dir, name));
  }
  return removed;
}
