#!/usr/bin/env node
/**
 * The `octo-native` command line (docs/methods.md §9): the yargs wiring (command names, options, help).
 * Each command's handler is in its own file beside this one: info, generate, train, sft, merge, eval, compare,
 * bench, plan (grade and report call lib/grading and lib/report directly).
 */
import path from "node:path";

import yargs, { type Argv } from "yargs";
import { hideBin } from "yargs/helpers";

import { BENCHES } from "../../bench";
import { STRATEGIES } from "../engine/memory-plan";
import { COMPARED_ARMS, DEFAULT_ARMS } from "../demo/compare-methods";
import { EVAL_PRESETS } from "../eval/presets";
import { runGradeCommand } from "../grading/grade-file";
import { DEFAULT_TIMEOUT_MS } from "../grading/verify";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { writeRunReport } from "../report";
import { parseConfig } from "../rl/config";
import { DEFAULT_CORRECTION_INSTRUCTION } from "../rl/prompts";
import { benchCommand } from "./bench";
import { compareCommand } from "./compare";
import { evalCommand } from "./eval";
import { generateCommand } from "./generate";
import { infoCommand } from "./info";
import { mergeCommand } from "./merge";
import { planCommand } from "./plan";
import { sftCommand } from "./sft";
import { trainCommand } from "./train";

/** `info`'s options. */
const infoOptions = (y: Argv) => y.option("json", { type: "boolean", default: false, describe: "print JSON" });

/** `generate`'s options. */
const generateOptions = (y: Argv) =>
  y
    .option("model", { type: "string", describe: "Hugging Face model directory (config.json + model.safetensors + tokenizer.json)" })
    .option("prompt", { type: "string", demandOption: true, describe: "prompt text" })
    .option("chat", { type: "boolean", default: false, describe: "wrap the prompt in the tokenizer's chat template" })
    .option("n", { type: "number", default: 1, describe: "samples" })
    .option("max-tokens", { type: "number", default: 64, describe: "new tokens per sample at most" })
    .option("temperature", { type: "number", default: 1.0, describe: "0 = greedy" })
    .option("top-p", { type: "number", default: 1.0 })
    .option("top-k", { type: "number", default: 0, describe: "0 = off" })
    .option("min-p", { type: "number", default: 0, describe: "0 = off" })
    .option("seed", { type: "number", default: 0, describe: "seed of the prompt; its n samples draw independent streams" })
    .option("stop", { type: "string", array: true, default: [] as string[], describe: "text that ends a sample (repeatable)" })
    .option("device", { type: "string", default: "auto", describe: "auto | cpu | cuda | cuda:N" })
    .option("json", { type: "boolean", default: false, describe: "print JSON with token ids and log-probs" });

/** `train`'s options. */
const trainOptions = (y: Argv) =>
  y
    .option("config", { type: "string", describe: "YAML recipe (see configs/)" })
    .option("set", { type: "string", array: true, default: [] as string[], describe: "override a key: --set loss.klCoef=0.01" })
    .option("resume", { type: "boolean", default: false, describe: "continue from the run directory's newest valid checkpoint" })
    .option("allow-config-change", { type: "boolean", default: false, describe: "--resume even though the config or the training set changed (the old config is kept)" })
    .option("dir", { type: "string", describe: "run directory (default: run.dir; the demo: runs/demo)" })
    .option("quick", { type: "boolean", default: false, describe: "demo only: tiny budgets, for a smoke test" })
    .option("nproc", { type: "number", default: 1, describe: "data-parallel ranks to start on this machine (torchrun-style; see README for several hosts)" })
    .option("skip-memory-check", { type: "boolean", default: false, describe: "start even when the memory plan (octo-native plan) says the configuration does not fit" });

/** `plan`'s options. */
const planOptions = (y: Argv) =>
  y
    .option("model", { type: "string", describe: "Hugging Face model directory (only config.json is read); the run settings are the config defaults (--set to change them)" })
    .option("config", { type: "string", describe: "YAML recipe (its model.path's config.json, rollout and training settings, method, strategy, lora)" })
    .option("set", { type: "string", array: true, default: [] as string[], describe: "override a key: --set training.microBatchSize=2" })
    .option("nproc", { type: "number", default: 1, describe: "GPUs (ranks) of the run" })
    .option("gpu-memory", { type: "string", demandOption: true, describe: "memory of one GPU: 80GB, 79.6GiB, 81559MiB (GB = GiB = 2^30 bytes)" })
    .option("strategy", { type: "string", choices: [...STRATEGIES], describe: "distributed.strategy (default: the config's, ddp)" })
    .option("lora", { type: "number", describe: "train rank-r adapters on every projection instead of all weights" })
    .option("prompt-tokens", { type: "number", describe: "the longest prompt in tokens (default 512)" })
    .option("device", { type: "string", choices: ["cuda", "cpu"], default: "cuda", describe: "plan for GPUs (bf16) or CPU ranks (fp32)" })
    .option("json", { type: "boolean", default: false, describe: "print JSON (fits, bytesPerGpu, the breakdown) instead of a table" });

/** `sft`'s options. */
const sftOptions = (y: Argv) =>
  y
    .option("model", { type: "string", demandOption: true, describe: "Hugging Face model directory" })
    .option("data", { type: "string", demandOption: true, describe: "JSONL of {problem, o1, o2?} (o2 omitted: a plain answer)" })
    .option("out", { type: "string", demandOption: true, describe: "where to save the trained model (a new or empty directory)" })
    .option("overwrite", { type: "boolean", default: false, describe: "save into a non-empty --out, replacing only the model's own files" })
    .option("steps", { type: "number", default: 200 })
    .option("batch", { type: "number", default: 16 })
    .option("lr", { type: "number", default: 1e-5 })
    .option("max-tokens", { type: "number", default: 1024, describe: "response tokens at most" })
    .option("template", { type: "string", default: "{problem}", describe: "user message; {problem} is replaced" })
    .option("chat", { type: "boolean", default: true, describe: "wrap in the tokenizer's chat template" })
    .option("separator", { type: "string", describe: "self-correction marker (default: the one in docs/methods.md §6.1)" })
    .option("device", { type: "string", default: "auto" });

/** `merge`'s options. */
const mergeOptions = (y: Argv) =>
  y
    .option("base", { type: "string", demandOption: true, describe: "the base model's Hugging Face directory" })
    .option("adapter", { type: "string", demandOption: true, describe: "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors; a LoRA run's checkpoint)" })
    .option("out", { type: "string", demandOption: true, describe: "where to write the merged model (a new or empty directory)" })
    .option("overwrite", { type: "boolean", default: false, describe: "write into a non-empty --out, replacing only the model's own files" })
    .option("device", { type: "string", default: "cpu", describe: "where the merge is computed (fp32); cpu | cuda | cuda:N" });

/** `eval`'s options. */
const evalOptions = (y: Argv) =>
  y
    .option("model", { type: "string", demandOption: true, describe: "Hugging Face model directory (a run's checkpoint works)" })
    .option("data", { type: "string", demandOption: true, describe: `dataset file (.jsonl/.json/.parquet) or preset: ${Object.keys(EVAL_PRESETS).join(", ")}` })
    .option("limit", { type: "number", describe: "the first N problems only" })
    .option("mode", { type: "string", choices: ["octopus", "two-turn"], default: "octopus", describe: "octopus: rounds after the marker (appended again for more); two-turn: SCoRe instruction turns" })
    .option("n", { type: "number", default: 1, describe: "samples per problem" })
    .option("k", { type: "number", array: true, describe: "k of pass@k/maj@k/mean@k (default: powers of two up to n, and n)" })
    .option("rounds", { type: "number", default: 2, describe: "rounds per sample (t1 … tR), at least 2" })
    .option("temperature", { type: "number", default: 0, describe: "0 = greedy (then --n must be 1)" })
    .option("top-p", { type: "number", default: 1 })
    .option("max-tokens", { type: "number", default: 1024, describe: "new tokens per generation call" })
    .option("batch", { type: "number", default: 32, describe: "problems per generate call (memory only)" })
    .option("seed", { type: "number", default: 0, describe: "problem i samples from seed + i" })
    .option("template", { type: "string", default: parseConfig({}).data.promptTemplate, describe: "user message; {problem} is replaced" })
    .option("chat", { type: "boolean", default: true, describe: "wrap the prompt in the tokenizer's chat template (--no-chat: plain text)" })
    .option("separator", { type: "string", default: DEFAULT_SEPARATOR, describe: "Octopus self-correction marker" })
    .option("instruction", { type: "string", default: DEFAULT_CORRECTION_INSTRUCTION, describe: "two-turn: the instruction after each turn" })
    .option("out", { type: "string", describe: "output directory (default: runs/eval/<model>-<data>)" })
    .option("device", { type: "string", default: "auto" })
    .option("json", { type: "boolean", default: false, describe: "print the summary JSON instead of a table" });

/** `grade`'s options. */
const gradeOptions = (y: Argv) =>
  y
    .option("input", { type: "string", demandOption: true, describe: "JSONL file of {gold, pred}" })
    .option("output", { type: "string", describe: "output file (default: stdout)" })
    .option("timeout-ms", { type: "number", default: DEFAULT_TIMEOUT_MS, describe: "time budget per answer: extraction, normalisation and CAS" })
    .option("explain", { type: "boolean", default: false, describe: "add `explain` to each line: how gold and pred were read (kind, normalised form) and why they are equal or not" });

/** `report`'s arguments. */
const reportOptions = (y: Argv) =>
  y
    .positional("run-dir", { type: "string", demandOption: true, describe: "run directory (metrics.jsonl, or stage1/, stage2/, … of the demo)" })
    .option("out", { type: "string", describe: "HTML file to write (default: RUN_DIR/report.html)" });

/** `compare`'s arguments. */
const compareOptions = (y: Argv) =>
  y
    .option("model", { type: "string", default: path.join("runs", "demo", "sft"), describe: "the SFT model every arm starts from (default: the demo's, from `npx octo-native train`)" })
    .option("out", { type: "string", default: path.join("runs", "compare"), describe: "where the runs, compare.json and compare.html go" })
    .option("steps", { type: "number", default: 12, describe: "RL steps per arm (two-stage methods: half per stage)" })
    .option("seeds", { type: "number", default: 1, describe: "repeat every arm with run.seed 0…K−1; mean ± standard error over them" })
    .option("methods", { type: "string", array: true, choices: Object.keys(COMPARED_ARMS), describe: `arms (default: ${DEFAULT_ARMS.join(", ")})` })
    .option("eval-problems", { type: "number", default: 1000, describe: "held-out problems of the evaluation (4 samples each, as the demo's)" });

/** `bench`'s arguments. */
const benchOptions = (y: Argv) =>
  y
    .positional("name", { type: "string", choices: [...Object.keys(BENCHES), "all"], demandOption: true })
    .option("device", { type: "string", default: "auto" })
    .option("quick", { type: "boolean", default: false, describe: "small sizes, for a smoke test" })
    .option("strategy", { type: "string", array: true, choices: ["ddp", "zero2", "fsdp"] as const, describe: "data-parallel: the strategies compared in one run (default: all)" })
    .option("json", { type: "boolean", default: false, describe: "JSON only (default: JSON plus a one-line summary)" });

async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName("octo-native")
    .strict()
    .demandCommand(1, "name a command (see --help)")
    .command("info", "versions of the package, Node and libtorch; CUDA devices; build flags", infoOptions, (args) => infoCommand(args))
    .command("generate", "sample completions of a prompt (default model: the built-in demo model)", generateOptions, (args) => generateCommand(args))
    .command(
      "train",
      "RL training from a YAML recipe; with no --config, the embedded demo (SFT cold start + Octopus Stage I and II)",
      trainOptions,
      (args) => trainCommand(args, argv),
    )
    .command(
      "plan",
      "per-GPU memory of a training run (weights, gradients, master, Adam, reference, activations, KV cache) from config.json alone, and whether it fits",
      planOptions,
      (args) => planCommand(args),
    )
    .command("sft", "supervised cold start on (problem, o1, o2) examples: teaches the self-correction format", sftOptions, (args) => sftCommand(args))
    .command("merge", "merge a LoRA adapter into its base: one Hugging Face checkpoint with W + (alpha/r)·B·A in the base's dtype", mergeOptions, (args) => mergeCommand(args))
    .command(
      "eval",
      "evaluate a model: pass@k, maj@k, mean@k and self-correction (Acc@t1…t_R, Δ, Δi→c, Δc→i); per-sample JSONL + summary JSON",
      evalOptions,
      (args) => evalCommand(args),
    )
    .command("grade", "grade answers: JSONL of {gold, pred} in, each line with `correct` out", gradeOptions, async (args) => {
      const summary = await runGradeCommand({ input: args.input, output: args.output, timeoutMs: args.timeoutMs, explain: args.explain });
      const overBudget = summary.timedOut > 0 ? ` (${summary.timedOut} ran past the ${args.timeoutMs} ms budget and count as incorrect: see grade_error; --timeout-ms allows more)` : "";
      console.error(`graded ${summary.total}: ${summary.correct} correct${overBudget}`);
    })
    .command(
      "report <run-dir>",
      "HTML report of a training or demo run: plots over steps and the evaluation tables (SVGs in plots/ beside it)",
      reportOptions,
      async (args) => {
        const report = await writeRunReport(args["run-dir"] as string, { out: args.out });
        console.log(report.html);
        if (report.emptyPlots.length > 0) console.error(`not logged by this run (no plot): ${report.emptyPlots.join(", ")}`);
      },
    )
    .command(
      "compare",
      "methods against GRPO on the demo from the same SFT model at an equal generation budget (Octopus, GRPO-n, GRPO-2n): mean ± SE over --seeds",
      compareOptions,
      (args) => compareCommand(args),
    )
    .command(
      "bench <name>",
      `performance benches printing JSON ratios against a same-run baseline (${Object.keys(BENCHES).join(", ")})`,
      benchOptions,
      (args) => benchCommand(args),
    )
    .fail((message, error) => {
      throw error ?? new Error(message);
    })
    .help()
    .parseAsync();
}

main(hideBin(process.argv)).catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`octo-native: ${message}`);
  if (process.env.OCTO_NATIVE_DEBUG && error instanceof Error) console.error(error.stack);
  process.exitCode = 1;
  // A failed rank leaves at once: its process group's threads must not keep it (or its peers) waiting.
  if (process.env.WORLD_SIZE) process.exit(1);
});
