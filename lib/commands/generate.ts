/** `octo-native generate`: sample completions of one prompt from a model directory. */
import { ensureDemoModel } from "../demo/model";
import { Model } from "../engine/model";
import type { SamplingParams } from "../engine/sampling";
import { applyStopStrings, stopSequencesFor } from "../engine/stop-strings";
import { TextTokenizer } from "../engine/tokenizer";
import { printJson } from "./print";

export interface GenerateOptions {
  /** Hugging Face model directory; the built-in demo model when absent */
  model?: string;
  prompt: string;
  /** wrap the prompt as a user message in the tokenizer's chat template */
  chat: boolean;
  samples: number;
  /** text that ends a sample (finish reason "stop"); kept at the end of the sample */
  stop?: string[];
  device: string;
  sampling: Partial<SamplingParams>;
}

export interface GeneratedSample {
  text: string;
  tokens: number[];
  logprobs: number[];
  finishReason: string;
}

export interface GenerateReport {
  model: string;
  builtInModel: boolean;
  device: string;
  promptTokens: number;
  samples: GeneratedSample[];
  seconds: number;
  tokensPerSecond: number;
}

export async function generateFromPrompt(options: GenerateOptions): Promise<GenerateReport> {
  const builtInModel = options.model === undefined;
  const dir = options.model ?? (await ensureDemoModel());
  const model = await Model.load(dir, { device: options.device });
  try {
    const tokenizer = TextTokenizer.fromDir(dir);
    if (tokenizer.vocabSize > model.spec.vocabSize)
      throw new Error(
        `${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${model.spec.vocabSize}; ` +
          `tokenizer.json and config.json do not belong together`,
      );
    const promptIds = options.chat
      ? tokenizer.encodeChat([{ role: "user", content: options.prompt }], { addGenerationPrompt: true })
      : tokenizer.encode(options.prompt);
    const eosTokenIds = options.sampling.eosTokenIds ?? tokenizer.eosTokenIds;
    const stops = options.stop ?? [];
    const stopSequences = [...(options.sampling.stopSequences ?? []), ...stopSequencesFor(tokenizer, stops)];
    // One request with n samples: the prompt is prefilled once and shared by all of them.
    const request = { promptIds, n: options.samples, seed: options.sampling.seed ?? 0 };
    const start = process.hrtime.bigint();
    const generatedResults = await model.generate([request], { ...options.sampling, eosTokenIds, stopSequences });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const [results] = applyStopStrings(generatedResults, stops, tokenizer);
    const generated = results.reduce((n, r) => n + r.tokens.length, 0);
    return {
      model: dir,
      builtInModel,
      device: model.device,
      promptTokens: promptIds.length,
      samples: results.map((r) => ({
        text: tokenizer.decode(r.tokens, { skipSpecialTokens: true }),
        tokens: Array.from(r.tokens),
        logprobs: Array.from(r.logprobs),
        finishReason: r.finishReason,
      })),
      seconds,
      tokensPerSecond: generated / seconds,
    };
  } finally {
    model.dispose();
  }
}

export interface GenerateCommandArgs {
  model?: string;
  prompt: string;
  chat: boolean;
  n: number;
  "max-tokens": number;
  temperature: number;
  "top-p": number;
  "top-k": number;
  "min-p": number;
  seed: number;
  stop: string[];
  device: string;
  json: boolean;
}

/** The `generate` command: the samples after the prompt with their token counts and finish reasons, or (--json) the report. */
export async function generateCommand(args: GenerateCommandArgs): Promise<void> {
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
}
