/** Whole-file writes that a crash never leaves half done (docs/methods.md §12): a temp file renamed into place. */
import fs from "node:fs";

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const temp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(temp, data);
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}
