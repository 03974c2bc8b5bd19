/**
 * Data-parallel training across processes and hosts (docs/methods.md §13) on PyTorch's own c10d process
 * groups (Gloo on CPU, NCCL on CUDA), started the way torchrun starts workers: every rank gets
 * RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment
 * (`octo-native train --nproc N` sets them for N local ranks, see lib/commands/launch.ts).
 *
 * The split of the work: each rank generates and scores its share of the step's prompts (whole
 * groups), computes its loss with the step-wide counts of all ranks, and the gradients are
 * summed over the ranks (native/core/gradient_reducer.h), so every rank takes the update one
 * process would take on the combined batch. Rank 0 writes; the others compute.
 */
import { native, type NativeProcessGroup } from "../native";

/** torchrun's variables, read and checked. */
export interface TorchrunEnv {
  rank: number;
  worldSize: number;
  /** rank among the processes of this host: picks the GPU */
  localRank: number;
  masterAddr: string;
  masterPort: number;
}

export class DistributedEnvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DistributedEnvError";
  }
}

/** The torchrun variables of `env`, or undefined when WORLD_SIZE is not set (one process). */
export function torchrunEnv(env: NodeJS.ProcessEnv = process.env): TorchrunEnv | undefined {
  if (env.WORLD_SIZE === undefined || env.WORLD_SIZE === "") return undefined;
  const integer = (name: string, min: number, fallback?: number): number => {
    const text = env[name];
    if (text === undefined || text === "") {
      if (fallback !== undefined) return fallback;
      throw new DistributedEnvError(`WORLD_SIZE is set, so ${name} must be too (torchrun convention: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)`);
    }
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new DistributedEnvError(`${name}=${text}: expected an integer >= ${min}`);
    return value;
  };
  const worldSize = integer("WORLD_SIZE", 1);
  const rank = integer("RANK", 0);
  if (rank >= worldSize) throw new DistributedEnvError(`RANK=${rank} must be below WORLD_SIZE=${worldSize}`);
  const masterPort = integer("MASTER_PORT", 1, 29500);
  if (masterPort > 65535) throw new DistributedEnvError(`MASTER_PORT=${masterPort} is not a TCP port`);
  return { rank, worldSize, localRank: integer("LOCAL_RANK", 0, rank), masterAddr: env.MASTER_ADDR || "127.0.0.1", masterPort };
}

/** The device a rank computes on: its own GPU (LOCAL_RANK) when the config asks for CUDA or auto and there is one. */
export function rankDevice(configDevice: string, localRank: number): string {
  const cuda = native().info().cudaAvailable;
  if (configDevice === "cuda" || (configDevice === "auto" && cuda)) return `cuda:${localRank}`;
  return configDevice === "auto" ? "cpu" : configDevice;
}

export interface DataParallelOptions {
  timeoutSeconds: number;
  backend?: "auto" | "gloo" | "nccl";
  /** the model's device */
  device?: string;
}

/** This process's place in a data-parallel run, and the small reductions of the control layer. */
export class DataParallel {
  private constructor(readonly group: NativeProcessGroup, readonly env: TorchrunEnv) {}

  /** Joins the run's process group: resolves once every rank has, rejects after the timeout. */
  static async join(env: TorchrunEnv, options: DataParallelOptions): Promise<DataParallel> {
    if (!Number.isFinite(options.timeoutSeconds) || options.timeoutSeconds <= 0) throw new RangeError("distributed.timeoutSeconds must be positive");
    const group = await native().createProcessGroup({
      rank: env.rank,
      worldSize: env.worldSize,
      masterAddr: env.masterAddr,
      masterPort: env.masterPort,
      timeoutSeconds: options.timeoutSeconds,
      backend: options.backend ?? "auto",
      device: options.device ?? "cpu",
    });
    return new DataParallel(group, env);
  }

  get rank(): number {
    return this.env.rank;
  }

  get worldSize(): number {
    return this.env.worldSize;
  }

  /** Rank 0: the one that writes metrics, checkpoints and the summary. */
  get isMain(): boolean {
    return this.env.rank === 0;
  }

  /** Element-wise sums over the ranks (exact for integer counts: float64). `what` names it in errors. */
  async sum(values: number[], what: string): Promise<number[]> {
    return Array.from(await this.group.allReduce(Float64Array.from(values), "sum", what));
  }

  async max(values: number[], what: string): Promise<number[]> {
    return Array.from(await this.group.allReduce(Float64Array.from(values), "max", what));
  }

  async min(values: number[], what: string): Promise<number[]> {
    return Array.from(await this.group.allReduce(Float64Array.from(values), "min", what));
  }

  /** True on every rank when it is true on some rank (agreement on stopping, skipping, ...). */
  async anyTrue(flag: boolean, what: string): Promise<boolean> {
    return (await this.max([flag ? 1 : 0], what))[0] > 0;
  }

  /** This rank's share of `items` (the same list on every rank): items rank, rank + W, rank + 2W, ... */
  shard<T>(items: T[]): T[] {
    return items.filter((_, i) => i % this.env.worldSize === this.env.rank);
  }

  barrier(what: string): Promise<void> {
    return this.group.barrier(what);
  }

  /** Leaves the group, at the end of the run or on failure (NCCL's communicators are freed). */
  close(): void {
    this.group.shutdown();
  }
}
