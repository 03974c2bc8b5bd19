/** Atomic file writes (SPEC §12): a temporary file in the same directory, renamed into place. */
import fs from "node:fs";

/** Writes `text` to `file` so that readers see the old content or the whole new one, never a part. */
export function writeFileAtomic(file: string, text: string): void {
  const temp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(temp, text);
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}
