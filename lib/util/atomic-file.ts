/**
 * Writes that a crash never leaves half done, and I/O errors that name their path (docs/reliability.md).
 * A whole file goes to a temp file that is fsynced and renamed into place, then its directory is
 * fsynced so the rename itself survives a power cut; an append is one write of a whole line.
 */
import fs from "node:fs";
import path from "node:path";

/** `error` (from fs) as an Error whose message names `file` and what was being done: Node's write errors name no path. */
export function fileError(error: unknown, file: string, doing: string): Error {
  const cause = error as NodeJS.ErrnoException;
  const hint = cause.code === "ENOSPC" ? ": the disk is full; free space and resume (--resume)"
    : cause.code === "EROFS" ? ": the filesystem is read-only"
    : cause.code === "EACCES" || cause.code === "EPERM" ? ": permission denied"
    : "";
  const reason = cause.code ? `${cause.code}${hint}` : cause.message;
  return Object.assign(new Error(`${file}: cannot ${doing} (${reason})`), { code: cause.code, cause: error });
}

/** Flushes a directory's entries (renames, new files) to disk. */
export function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch (error) {
    // Some filesystems cannot fsync a directory (EINVAL, EISDIR); the rename stands regardless.
    if (!["EINVAL", "EISDIR", "EPERM", "EACCES"].includes((error as NodeJS.ErrnoException).code ?? "")) throw fileError(error, dir, "sync the directory");
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function writeSynced(file: string, data: string | Uint8Array): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `data` to `file` and flushes it to disk (no rename: for files inside a staging directory). */
export function writeFileDurable(file: string, data: string | Uint8Array): void {
  try {
    writeSynced(file, data);
  } catch (error) {
    throw fileError(error, file, "write");
  }
}

/** Replaces `file` with `data` all at once: readers see the old file or the new one, never a part. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const temp = `${file}.tmp-${process.pid}`;
  try {
    writeSynced(temp, data);
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw fileError(error, file, "write");
  }
  syncDirectory(path.dirname(file));
}

/**
 * Appends one line. A full disk can still leave part of it (the kernel writes what fits): readers
 * of such a log (lib/rl/metrics-log.ts) drop a torn last line.
 */
export function appendLine(file: string, line: string): void {
  try {
    fs.appendFileSync(file, line.endsWith("\n") ? line : line + "\n");
  } catch (error) {
    throw fileError(error, file, "append to");
  }
}
