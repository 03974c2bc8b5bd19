/**
 * Paths the user names (model directories, datasets, recipes, grade inputs, run directories):
 * files read only when they are regular files, directories created with errors that name the
 * path and the cause.
 */
import fs from "node:fs";
import path from "node:path";

import { fileError } from "./atomic-file";

/** The nearest ancestor of `dir` (itself included) that exists. */
function nearestExisting(dir: string): string {
  let at = path.resolve(dir);
  while (!fs.existsSync(at) && path.dirname(at) !== at) at = path.dirname(at);
  return at;
}

/**
 * `mkdir -p dir`; `what` names the directory in the error ("the run directory"). Errors name the
 * path and the cause (lib/util/atomic-file.ts fileError). Node's recursive mkdir reports ENOENT for
 * the leaf when a missing parent cannot be made (read-only file system, no permission), so then
 * the nearest existing ancestor is asked why.
 */
export function makeDirectory(dir: string, what: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw fileError(error, dir, `create ${what}: it exists and is not a directory`);
    if (code === "ENOTDIR") throw fileError(error, dir, `create ${what}: a part of its path is a file, not a directory`);
    if (code === "ENOENT") {
      const existing = nearestExisting(dir);
      try {
        fs.accessSync(existing, fs.constants.W_OK);
      } catch (cause) {
        throw fileError(cause, existing, `create ${what} ${dir} in it`);
      }
    }
    throw fileError(error, dir, `create ${what}`);
  }
}

/** What a file-system entry is, for a message: "a FIFO (named pipe)", "a directory", … */
function entryKind(stats: fs.Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO (named pipe)";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  return "not a file";
}

/**
 * A path that names something other than a regular file. Reading a FIFO waits for a writer,
 * forever if none comes; a device may never end. The message leaves the path to the caller's
 * error, which names it.
 */
export class NotRegularFileError extends Error {
  constructor(readonly path: string, readonly kind: string) {
    super(`it is ${kind}, not a regular file; give the path of the file itself`);
    this.name = "NotRegularFileError";
  }
}

/**
 * Opens `file` for reading only if it is a regular file (symlinks followed). Non-blocking open:
 * opening a FIFO would otherwise wait for a writer before the check could refuse it.
 */
export function openRegularFile(file: string): number {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  try {
    const stats = fs.fstatSync(fd);
    if (!stats.isFile()) throw new NotRegularFileError(file, entryKind(stats));
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  return fd;
}

/** fs.readFileSync of a regular file; anything else is refused (NotRegularFileError) before a byte is read. */
export function readRegularFile(file: string): Buffer;
export function readRegularFile(file: string, encoding: BufferEncoding): string;
export function readRegularFile(file: string, encoding?: BufferEncoding): Buffer | string {
  const fd = openRegularFile(file);
  try {
    return encoding === undefined ? fs.readFileSync(fd) : fs.readFileSync(fd, encoding);
  } finally {
    fs.closeSync(fd);
  }
}
