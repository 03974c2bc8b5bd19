/** `octo-native sft`: the cold start from a JSONL file of (problem, o1, o2) examples. */
import { checkSaveTarget, Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { DatasetError, readRows } from "../rl/data";
import { runSft, type SftExample } from "../rl/sft";

export interface SftCommandOptions {
  model: string;
  data: string;
  out: string;
  steps: number;
  batchSize: number;
  lr: number;
  maxResponseTokens: number;
  template: string;
  chat: boolean;
  separator?: string;
  device: string;
  /** save into a non-empty `out` (only the model's files are replaced) */
  overwrite?: boolean;
}

export async function runSftCommand(options: SftCommandOptions): Promise<{ out: string; steps: number; firstLoss: number; lastLoss: number }> {
  // Before training, not after: a refused save would lose the whole run.
  checkSaveTarget(options.out, options.overwrite ?? false);
  const rows = await readRows(options.data);
  if (rows.length === 0) throw new DatasetError(`${options.data}: the dataset is empty`);
  const items: SftExample[] = rows.map((row, i) => {
    const problem = row.problem ?? row.question ?? row.prompt;
    if (typeof problem !== "string" || typeof row.o1 !== "string")
      throw new DatasetError(`${options.data}: row ${i + 1} needs string 'problem' (or 'question') and 'o1' fields`);
    if (row.o2 !== undefined && typeof row.o2 !== "string") throw new DatasetError(`${options.data}: row ${i + 1}: 'o2' must be a string`);
    return { example: { id: String(i), problem, answer: String(row.answer ?? "") }, o1: row.o1, o2: row.o2 as string | undefined };
  });
  const model = await Model.load(options.model, { device: options.device });
  try {
    const tokenizer = TextTokenizer.fromDir(options.model);
    const losses = await runSft(model, tokenizer, items, {
      prompt: { template: options.template, chat: options.chat },
      separator: options.separator ?? DEFAULT_SEPARATOR,
      steps: options.steps,
      batchSize: options.batchSize,
      lr: options.lr,
      maxResponseTokens: options.maxResponseTokens,
      seed: 0,
      onStep: (step, loss) => (step % 10 === 0 || step === options.steps) && process.stderr.write(`sft step ${step}/${options.steps} loss ${loss.toFixed(4)}\n`),
    });
    await model.save(options.out, { overwrite: options.overwrite });
    return { out: options.out, steps: options.steps, firstLoss: losses[0], lastLoss: losses[losses.length - 1] };
  } finally {
    model.dispose();
  }
}

export interface SftCommandArgs {
  model: string;
  data: string;
  out: string;
  steps: number;
  batch: number;
  lr: number;
  "max-tokens": number;
  template: string;
  chat: boolean;
  separator?: string;
  device: string;
  overwrite: boolean;
}

/** The `sft` command: trains and saves the model, then prints the result as one JSON line. */
export async function sftCommand(args: SftCommandArgs): Promise<void> {
  const result = await runSftCommand({
    model: args.model, data: args.data, out: args.out, steps: args.steps, batchSize: args.batch, lr: args.lr,
    maxResponseTokens: args["max-tokens"], template: args.template, chat: args.chat, separator: args.separator, device: args.device, overwrite: args.overwrite,
  });
  console.log(JSON.stringify(result));
}
