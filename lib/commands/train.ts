/**
 * `octo-native train`: an RL run from a YAML recipe (lib/rl/run.ts); `--nproc N` starts N local ranks
 * of this same command (lib/commands/launch.ts); with no --config, the embedded demo (lib/demo/run-demo.ts).
 */
import { DEMO_SETTABLE_KEYS, formatTable, runDemo } from "../demo/run-demo";
import { ConfigError, loadConfig } from "../rl/config";
import { runTraining } from "../rl/run";
import { launchLocalRanks } from "./launch";

export interface TrainCommandArgs {
  config?: string;
  set: string[];
  resume: boolean;
  "allow-config-change": boolean;
  dir?: string;
  quick: boolean;
  nproc: number;
  "skip-memory-check": boolean;
}

/** `argv` without `--name VALUE` / `--name=VALUE`. */
function withoutOption(argv: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}`) i++;
    else if (!argv[i].startsWith(`--${name}=`)) out.push(argv[i]);
  }
  return out;
}

/**
 * The demo's seed and run directory from `--set run.seed=N`, `--set run.dir=DIR` and `--dir`; any
 * other key is refused (the demo's recipe is fixed: docs/methods.md §10).
 */
function demoSettings(args: TrainCommandArgs): { seed: number; dir: string } {
  for (const entry of args.set) {
    const key = entry.slice(0, Math.max(0, entry.indexOf("=")));
    if (!(DEMO_SETTABLE_KEYS as readonly string[]).includes(key))
      throw new ConfigError(`--set '${entry}': the demo (train without --config) accepts only ${DEMO_SETTABLE_KEYS.map((k) => `--set ${k}=…`).join(" and ")}; give a recipe with --config to set other keys`);
  }
  // Parsed by the schema, so a seed that is not a non-negative integer is refused with the key's name.
  const run = loadConfig(undefined, args.set).run;
  const dirSet = args.set.some((entry) => entry.startsWith("run.dir="));
  if (dirSet && args.dir !== undefined && args.dir !== run.dir) throw new ConfigError(`--dir ${args.dir} and --set run.dir=${run.dir} disagree; give the demo's directory once`);
  return { seed: run.seed, dir: args.dir ?? (dirSet ? run.dir : "runs/demo") };
}

/** The `train` command; `argv` is the command line (the ranks of --nproc get it without --nproc). */
export async function trainCommand(args: TrainCommandArgs, argv: string[]): Promise<void> {
  if (!Number.isInteger(args.nproc) || args.nproc < 1) throw new Error(`--nproc must be a positive integer (got ${args.nproc})`);
  if (args.nproc > 1) {
    if (!args.config) throw new Error("--nproc needs --config (the embedded demo runs in one process)");
    if (process.env.WORLD_SIZE) throw new Error("--nproc starts its own ranks; it cannot run inside a rank (WORLD_SIZE is already set)");
    const launched = await launchLocalRanks({ nproc: args.nproc, command: process.execPath, args: [process.argv[1], ...withoutOption(argv, "nproc")] });
    process.exitCode = launched.exitCode;
    return;
  }
  if (!args.config) {
    if (args.resume || args["allow-config-change"]) throw new Error("--resume and --allow-config-change need --config (the demo always runs from scratch)");
    const { seed, dir } = demoSettings(args);
    const summary = await runDemo({ dir, seed, quick: args.quick });
    console.log(formatTable(summary.evaluations));
    console.log(`summary: ${summary.dir}/summary.json (${summary.seconds.toFixed(0)} s)`);
    return;
  }
  const config = loadConfig(args.config, args.dir ? [...args.set, `run.dir=${args.dir}`] : args.set);
  const summary = await runTraining(config, { resume: args.resume, allowConfigChange: args["allow-config-change"], skipMemoryCheck: args["skip-memory-check"] });
  console.log(JSON.stringify({ runDir: summary.runDir, steps: summary.steps, interrupted: summary.interrupted, checkpoint: summary.finalCheckpoint }));
  // A stopped run exits as the signal's default would (130 Ctrl-C, 143 SIGTERM), after saving; a
  // rank stopped by its peers' agreement, with 130. The launcher counts both as a clean stop.
  if (summary.interrupted) process.exitCode = summary.stopSignal === "SIGTERM" ? 143 : 130;
}
