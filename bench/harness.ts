/**
 * Bench harness: every bench measures its subject and a baseline in the same run and
 * reports their ratio, with the device and versions, as one JSON object (docs/methods.md §11).
 */
import os from "node:os";

import { installInfo } from "../lib/commands/info";

export interface BenchResult {
  bench: string;
  /** what `ratio` means, e.g. "load time / raw read time (lower is better)" */
  ratioMeaning: string;
  ratio: number;
  [measurement: string]: unknown;
}

export interface Bench {
  description: string;
  run(options: BenchOptions): Promise<BenchResult>;
}

export interface BenchOptions {
  device: string;
  /** smaller sizes for a quick check */
  quick: boolean;
  /** the data-parallel bench's strategies (default: ddp, zero2 and fsdp) */
  strategies?: ("ddp" | "zero2" | "fsdp")[];
}

/** Environment recorded with every result, so numbers are only compared like for like. */
export function benchEnvironment(): Record<string, unknown> {
  const info = installInfo();
  return {
    package: info.package.version,
    node: info.node,
    libtorch: info.libtorch.version,
    cuda: info.cuda,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cpuCount: os.cpus().length,
    threads: info.threads,
    date: new Date().toISOString(),
  };
}

/** Median of `repeats` timings (seconds) of `fn` after one warm-up call. */
export async function medianSeconds(repeats: number, fn: () => Promise<unknown> | unknown): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
