#!/usr/bin/env node
/** The `octo-native` command line (docs/methods.md §9). */
import path from "node:path";

import yargs from "yargs";
import { hideBin } from "yargs/helpers";

import { BENCHES } from "../../bench";
import { loadConfig, parseConfig } from "../rl/config";
import { formatTable, runDemo } from "../demo/run-demo";
import { formatEvalSummary, runEvalCommand } from "./eval";
import { EVAL_PRESETS } from "../eval/presets";
import { generateFromPrompt } from "./generate";
import { runGradeCommand } from "../grading/grade-file";
import { formatInstallInfo, installInfo } from "./info";
import { launchLocalRanks } from "./launch";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { DEFAULT_CORRECTION_INSTRUCTION } from "../rl/prompts";
import { writeRunReport } from "../report";
import { runSftCommand } from "./sft";
import { runTraining } from "../rl/run";

/** `argv` without `--name VALUE` / `--name=VALUE`. */
function withoutOption(argv: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}`) i++;
    else if (!argv[i].startsWith(`--${name}=`)) out.push(argv[i]);
  }
  return out;
}

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName("octo-native")
    .strict()
    .demandCommand(1, "name a command (see --help)")
    .command(
      "info",
      "versions of the package, Node and libtorch; CUDA devices; build flags",
      (y) => y.option("json", { type: "boolean", default: false, describe: "print JSON" }),
      (args) => {
        const info = installInfo();
        if (args.json) printJson(info);
        else console.log(formatInstallInfo(info));
      },
    )
    .command(
      "generate",
      "sample completions of a prompt (default model: the built-in demo model)",
      (y) =>
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
          .option("json", { type: "boolean", default: false, describe: "print JSON with token ids and log-probs" }),
      async (args) => {
        const report = await generateFromPrompt({
          model: args.model,
          prompt: args.prompt,
          chat: args.chat,
          samples: args.n,
          stop: args.stop,
          device: args.device,
          sampling: {
            maxNewTokens: args["max-tokens"],
            temperature: args.temperature,
            topP: args["top-p"],
            topK: args["top-k"],
            minP: args["min-p"],
            seed: args.seed,
          },
        });
        if (args.json) return printJson(report);
        if (report.builtInModel)
          console.log(`(built-in demo model at ${report.model}: random weights until it is trained, so expect noise)`);
        report.samples.forEach((s, i) => console.log(`--- sample ${i} (${s.tokens.length} tokens, ${s.finishReason})\n${args.prompt}${s.text}`));
        console.log(`--- ${report.tokensPerSecond.toFixed(1)} tokens/s on ${report.device}`);
      },
    )
    .command(
      "train",
      "RL training from a YAML recipe; with no --config, the embedded demo (SFT cold start + Octopus Stage I and II)",
      (y) =>
        y
          .option("config", { type: "string", describe: "YAML recipe (see configs/)" })
          .option("set", { type: "string", array: true, default: [] as string[], describe: "override a key: --set loss.klCoef=0.01" })
          .option("resume", { type: "boolean", default: false, describe: "continue from the run directory's newest checkpoint" })
          .option("dir", { type: "string", describe: "run directory (default: run.dir; the demo: runs/demo)" })
          .option("quick", { type: "boolean", default: false, describe: "demo only: tiny budgets, for a smoke test" })
          .option("nproc", { type: "number", default: 1, describe: "data-parallel ranks to start on this machine (torchrun-style; see README for several hosts)" }),
      async (args) => {
        if (!Number.isInteger(args.nproc) || args.nproc < 1) throw new Error(`--nproc must be a positive integer (got ${args.nproc})`);
        if (args.nproc > 1) {
          if (!args.config) throw new Error("--nproc needs --config (the embedded demo runs in one process)");
          if (process.env.WORLD_SIZE) throw new Error("--nproc starts its own ranks; it cannot run inside a rank (WORLD_SIZE is already set)");
          const launched = await launchLocalRanks({ nproc: args.nproc, command: process.execPath, args: [process.argv[1], ...withoutOption(argv, "nproc")] });
          process.exitCode = launched.exitCode;
          return;
        }
        if (!args.config) {
          if (args.set.length > 0 || args.resume) throw new Error("--set and --resume need --config (the demo takes neither)");
          const summary = await runDemo({ dir: args.dir ?? "runs/demo", quick: args.quick });
          console.log(formatTable(summary.evaluations));
          console.log(`summary: ${summary.dir}/summary.json (${summary.seconds.toFixed(0)} s)`);
          return;
        }
        const config = loadConfig(args.config, args.dir ? [...args.set, `run.dir=${args.dir}`] : args.set);
        const summary = await runTraining(config, { resume: args.resume });
        console.log(JSON.stringify({ runDir: summary.runDir, steps: summary.steps, interrupted: summary.interrupted, checkpoint: summary.finalCheckpoint }));
        if (summary.interrupted) process.exitCode = 130;
      },
    )
    .command(
      "sft",
      "supervised cold start on (problem, o1, o2) examples: teaches the self-correction format",
      (y) =>
        y
          .option("model", { type: "string", demandOption: true, describe: "Hugging Face model directory" })
          .option("data", { type: "string", demandOption: true, describe: "JSONL of {problem, o1, o2?} (o2 omitted: a plain answer)" })
          .option("out", { type: "string", demandOption: true, describe: "where to save the trained model" })
          .option("steps", { type: "number", default: 200 })
          .option("batch", { type: "number", default: 16 })
          .option("lr", { type: "number", default: 1e-5 })
          .option("max-tokens", { type: "number", default: 1024, describe: "response tokens at most" })
          .option("template", { type: "string", default: "{problem}", describe: "user message; {problem} is replaced" })
          .option("chat", { type: "boolean", default: true, describe: "wrap in the tokenizer's chat template" })
          .option("separator", { type: "string", describe: "self-correction marker (default: the one in docs/methods.md §6.1)" })
          .option("device", { type: "string", default: "auto" }),
      async (args) => {
        const result = await runSftCommand({
          model: args.model, data: args.data, out: args.out, steps: args.steps, batchSize: args.batch, lr: args.lr,
          maxResponseTokens: args["max-tokens"], template: args.template, chat: args.chat, separator: args.separator, device: args.device,
        });
        console.log(JSON.stringify(result));
      },
    )
    .command(
      "eval",
      "evaluate a model: pass@k, maj@k, mean@k and self-correction (Acc@t1…t_R, Δ, Δi→c, Δc→i); per-sample JSONL + summary JSON",
      (y) =>
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
          .option("json", { type: "boolean", default: false, describe: "print the summary JSON instead of a table" }),
      async (args) => {
        const dataName = path.basename(args.data).replace(/\.(jsonl|json|parquet)$/, "");
        const out = args.out ?? path.join("runs", "eval", `${path.basename(path.resolve(args.model))}-${dataName}`);
        const summary = await runEvalCommand({
          model: args.model, data: args.data, limit: args.limit, out, device: args.device,
          settings: {
            mode: args.mode as "octopus" | "two-turn", samplesPerProblem: args.n, ks: args.k, rounds: args.rounds,
            temperature: args.temperature, topP: args["top-p"], maxNewTokens: args["max-tokens"], batch: args.batch, seed: args.seed,
            prompt: { template: args.template, chat: args.chat }, separator: args.separator, instruction: args.instruction,
          },
        });
        if (args.json) printJson(summary);
        else console.log(`${formatEvalSummary(summary)}\nwrote ${path.join(out, "samples.jsonl")} and ${path.join(out, "summary.json")}`);
      },
    )
    .command(
      "grade",
      "grade answers: JSONL of {gold, pred} in, each line with `correct` out",
      (y) =>
        y
          .option("input", { type: "string", demandOption: true, describe: "JSONL file of {gold, pred}" })
          .option("output", { type: "string", describe: "output file (default: stdout)" }),
      async (args) => {
        const summary = await runGradeCommand({ input: args.input, output: args.output });
        console.error(`graded ${summary.total}: ${summary.correct} correct`);
      },
    )
    .command(
      "report <run-dir>",
      "HTML report of a training or demo run: plots over steps and the evaluation tables (SVGs in plots/ beside it)",
      (y) =>
        y
          .positional("run-dir", { type: "string", demandOption: true, describe: "run directory (metrics.jsonl, or stage1/, stage2/, … of the demo)" })
          .option("out", { type: "string", describe: "HTML file to write (default: RUN_DIR/report.html)" }),
      async (args) => {
        const report = await writeRunReport(args["run-dir"] as string, { out: args.out });
        console.log(report.html);
        if (report.emptyPlots.length > 0) console.error(`not logged by this run (no plot): ${report.emptyPlots.join(", ")}`);
      },
    )
    .command(
      "bench <name>",
      `performance benches printing JSON ratios against a same-run baseline (${Object.keys(BENCHES).join(", ")})`,
      (y) =>
        y
          .positional("name", { type: "string", choices: [...Object.keys(BENCHES), "all"], demandOption: true })
          .option("device", { type: "string", default: "auto" })
          .option("quick", { type: "boolean", default: false, describe: "small sizes, for a smoke test" })
          .option("json", { type: "boolean", default: false, describe: "JSON only (default: JSON plus a one-line summary)" }),
      async (args) => {
        const names = args.name === "all" ? Object.keys(BENCHES) : [args.name as string];
        for (const name of names) {
          const result = await BENCHES[name].run({ device: args.device, quick: args.quick });
          printJson(result);
          if (!args.json) console.error(`${name}: ratio ${result.ratio.toFixed(3)} — ${result.ratioMeaning}`);
        }
      },
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
