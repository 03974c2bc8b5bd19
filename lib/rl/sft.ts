/**
 * Supervised cold start (docs/methods.md §6.1): teach a model the self-correction format on
 * (prompt, o1, SEP, o2) examples before RL. o2 can come from a stronger model or from the
 * ground truth. Each example is tokenised as prompt + o1 + SEP + o2 + EOS with the parts
 * encoded separately (exact boundaries); the loss covers the whole response.
 */
import type { Model } from "../engine/model";
import type { TextTokenizer } from "../engine/tokenizer";
import { PolicyTrainer, type TrainSequence } from "../engine/trainer";
import { tokenizeCorrection } from "../methods/octopus/octopus";
import { seededPermutation } from "../util/random";
import type { Example } from "./data";
import { encodePrompt, type PromptOptions } from "./prompts";

export interface SftExample {
  example: Example;
  o1: string;
  /** the correction; absent for a plain answer */
  o2?: string;
}

export interface SftOptions {
  prompt: PromptOptions;
  separator: string;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps?: number;
  weightDecay?: number;
  maxResponseTokens: number;
  seed: number;
  /** called after each step */
  onStep?: (step: number, loss: number) => void;
}

export function sftSequence(tokenizer: TextTokenizer, item: SftExample, options: Pick<SftOptions, "prompt" | "separator" | "maxResponseTokens">): TrainSequence {
  const prompt = encodePrompt(item.example, tokenizer, options.prompt);
  const response = tokenizeCorrection(tokenizer, item.o1, options.separator, item.o2, tokenizer.eosTokenIds[0], options.maxResponseTokens);
  const tokens = new Int32Array(prompt.length + response.ids.length);
  tokens.set(prompt);
  tokens.set(response.ids, prompt.length);
  const lossMask = new Uint8Array(tokens.length).fill(1, prompt.length);
  return { tokens, lossMask };
}

/** Runs `steps` supervised steps over seeded shuffles of `items`; returns the per-step losses. */
export async function runSft(model: Model, tokenizer: TextTokenizer, items: SftExample[], options: SftOptions): Promise<number[]> {
  if (items.length === 0) throw new Error("sft: no training examples");
  const sequences = items.map((item) => sftSequence(tokenizer, item, options));
  const trainer = new PolicyTrainer(model, {
    schedule: { lr: options.lr, warmupSteps: options.warmupSteps ?? Math.min(20, options.steps), kind: "cosine", totalSteps: options.steps, minLrRatio: 0.1 },
    weightDecay: options.weightDecay ?? 0.01,
  });
  const losses: number[] = [];
  let order: number[] = [];
  let epoch = 0;
  for (let step = 0; step < options.steps; step++) {
    const batch: TrainSequence[] = [];
    while (batch.length < options.batchSize) {
      if (order.length === 0) order = seededPermutation(sequences.length, options.seed + epoch++);
      batch.push(sequences[order.pop()!]);
    }
    const report = await trainer.trainStep(batch, { objective: "supervised" });
    losses.push(report.loss);
    options.onStep?.(step + 1, report.loss);
  }
  return losses;
}
