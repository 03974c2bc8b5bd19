/**
 * One quick embedded-demo run shared by the test files that need a trained run directory
 * (eval reproduces its numbers, the report renders its plots). Jest runs files in parallel
 * workers, so the first caller builds it under a lock directory and the others wait.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { runDemo, type DemoSummary } from "../../lib/demo/run-demo";

const root = path.join(os.tmpdir(), `octo-native-quick-demo-${process.getuid?.() ?? 0}-${process.ppid}`);
const dir = path.join(root, "run");
const lock = path.join(root, "lock");

/** The run directory of a `--quick` demo (built once per jest invocation) and its summary. */
export async function quickDemoRun(): Promise<{ dir: string; summary: DemoSummary }> {
  const summaryFile = path.join(dir, "summary.json");
  fs.mkdirSync(root, { recursive: true });
  let owner = false;
  try {
    fs.mkdirSync(lock);
    owner = true;
  } catch {
    // another worker is building it
  }
  if (owner && !fs.existsSync(summaryFile)) await runDemo({ dir, quick: true, quiet: true });
  const deadline = Date.now() + 600_000;
  while (!fs.existsSync(summaryFile)) {
    if (Date.now() > deadline) throw new Error(`quick demo run in ${dir} did not finish within 10 minutes`);
    await new Promise((r) => setTimeout(r, 500));
  }
  return { dir, summary: JSON.parse(fs.readFileSync(summaryFile, "utf8")) as DemoSummary };
}
