/**
 * `octo-native eval`: evaluate a model directory on a dataset file or preset and write the
 * per-sample JSONL and a summary JSON (metrics and the settings used) into an output directory.
 */
import path from "node:path";

import { SingleBar } from "cli-progress";

import { Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { evaluateModel, resolveEvalSettings, type EvalSettings, type EvalSettingsInput } from "../eval/evaluate";
import type { EvalMetrics } from "../eval/metrics";
import { resolveEvalData } from "../eval/presets";
import { loadDataset } from "../rl/data";
import { writeFileAtomic } from "../util/atomic-file";
import { makeDirectory } from "../util/files";
import { printJson } from "./print";

export const SAMPLES_FILE = "samples.jsonl";
export const SUMMARY_FILE = "summary.json";

export interface EvalCommandOptions {
  model: string;
  /** a dataset file or a preset name */
  data: string;
  /** the first N problems only */
  limit?: number;
  out: string;
  device: string;
  settings: EvalSettingsInput;
  /** progress bar on a TTY, plain lines otherwise; false: silent */
  progress?: boolean;
}

export interface EvalSummary {
  model: string;
  data: string;
  preset?: string;
  problems: number;
  settings: EvalSettings;
  metrics: EvalMetrics;
  seconds: number;
  device: string;
}

/** Progress on stderr: a bar on a terminal, a line per batch otherwise (logs, CI). */
function progressReporter(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  const started = Date.now();
  if (process.stderr.isTTY) {
    const bar = new SingleBar({ format: `${label} [{bar}] {value}/{total} problems | ETA {eta_formatted}`, stream: process.stderr });
    let begun = false;
    return {
      update: (done, total) => {
        if (!begun) bar.start(total, 0);
        begun = true;
        bar.update(done);
      },
      stop: () => begun && bar.stop(),
    };
  }
  return {
    update: (done, total) => process.stderr.write(`${label}: ${done}/${total} problems (${((Date.now() - started) / 1000).toFixed(1)} s)\n`),
    stop: () => undefined,
  };
}

export async function runEvalCommand(options: EvalCommandOptions): Promise<EvalSummary> {
  const started = Date.now();
  const settings = resolveEvalSettings(options.settings); // bad flags fail before the model loads
  if (options.limit !== undefined && !(Number.isInteger(options.limit) && options.limit > 0))
    throw new RangeError(`--limit must be a positive integer, not ${options.limit}`);
  const spec = resolveEvalData(options.data, options.limit);
  const examples = await loadDataset(spec);
  const model = await Model.load(options.model, { device: options.device });
  try {
    const tokenizer = TextTokenizer.fromDir(options.model);
    if (tokenizer.vocabSize > model.spec.vocabSize)
      throw new Error(`${options.model}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${model.spec.vocabSize}`);
    const progress = options.progress === false ? undefined : progressReporter(`eval ${spec.preset ?? path.basename(spec.path)}`);
    let result;
    try {
      result = await evaluateModel(model, tokenizer, examples, settings, { onProgress: progress?.update });
    } finally {
      progress?.stop();
    }
    const summary: EvalSummary = {
      model: path.resolve(options.model),
      data: path.resolve(spec.path),
      ...(spec.preset ? { preset: spec.preset } : {}),
      problems: examples.length,
      settings: result.settings,
      metrics: result.metrics,
      seconds: (Date.now() - started) / 1000,
      device: model.device,
    };
    // The samples first: a summary.json means the directory is complete.
    makeDirectory(options.out, "the evaluation's output directory");
    writeFileAtomic(path.join(options.out, SAMPLES_FILE), result.samples.map((s) => JSON.stringify(s) + "\n").join(""));
    writeFileAtomic(path.join(options.out, SUMMARY_FILE), JSON.stringify(summary, null, 2) + "\n");
    return summary;
  } finally {
    model.dispose();
  }
}

/** The summary as a table: accuracy by round, transitions, and pass/maj/mean@k of the last round. */
export function formatEvalSummary(summary: EvalSummary): string {
  const m = summary.metrics;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines = [
    `${summary.problems} problems × ${m.samplesPerProblem} samples × ${m.rounds} rounds (${summary.settings.mode}), ${summary.seconds.toFixed(1)} s on ${summary.device}`,
    `accuracy by round: ${m.accuracy.map((a, r) => `t${r + 1} ${pct(a)}`).join("  ")}   marker ${pct(m.markerRate)}`,
    ...m.transitions.map((t) => `Δ(t${t.from},t${t.to}) ${pct(t.delta)}   Δi→c ${pct(t.incorrectToCorrect)}   Δc→i ${pct(t.correctToIncorrect)}`),
  ];
  for (const round of [m.byRound[0], m.byRound[m.byRound.length - 1]]) {
    const at = (name: string, values: Record<string, number>) => Object.entries(values).map(([k, v]) => `${name}@${k} ${pct(v)}`).join("  ");
    lines.push(`t${round.round}: ${at("pass", round.passAtK)}   ${at("maj", round.majAtK)}   ${at("mean", round.meanAtK)}`);
  }
  return lines.join("\n");
}

export interface EvalCommandArgs {
  model: string;
  data: string;
  limit?: number;
  mode: string;
  n: number;
  k?: number[];
  rounds: number;
  temperature: number;
  "top-p": number;
  "max-tokens": number;
  batch: number;
  seed: number;
  template: string;
  chat: boolean;
  separator: string;
  instruction: string;
  out?: string;
  device: string;
  json: boolean;
}

/** The `eval` command: evaluates into --out (default runs/eval/<model>-<data>) and prints the summary table or (--json) JSON. */
export async function evalCommand(args: EvalCommandArgs): Promise<void> {
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
}
