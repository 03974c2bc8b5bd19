/**
 * The built-in model of the embedded default (docs/methods.md §10): a tiny Qwen3-architecture model
 * created from scratch, with a character-level tokenizer of our own, saved as an ordinary
 * Hugging Face directory so that it runs through exactly the code path of a real checkpoint.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Model } from "../engine/model";
import { QWEN3_LAYOUT } from "../engine/model-config";
import type { ModelSpec } from "../native";

/** Printable ASCII and newline: enough for arithmetic word problems and \boxed{} answers. */
const DEMO_CHARACTERS = ["\n", ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))];
/**
 * Whole-word tokens for what the task repeats in every response: the two halves of the
 * correction marker and `\boxed{`. A real BPE vocabulary has such pieces too; here they cut a
 * demo response from ~77 characters to ~30 tokens, which buys the demo more RL steps.
 */
const DEMO_WORD_TOKENS = ["<self-correction>", "</self-correction>", "\\boxed{"];
const DEMO_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"];

/** ChatML, the format of the Qwen family. */
const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export const DEMO_VOCAB_SIZE = DEMO_CHARACTERS.length + DEMO_WORD_TOKENS.length + DEMO_SPECIAL_TOKENS.length;

export const DEMO_MODEL_SPEC: ModelSpec = {
  ...QWEN3_LAYOUT,
  vocabSize: DEMO_VOCAB_SIZE,
  hiddenSize: 128,
  intermediateSize: 384,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 32,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  tieWordEmbeddings: true,
};

/**
 * tokenizer.json of the demo: one token per character, no merges; then the word tokens (added,
 * not special: decoding keeps them) and the specials.
 */
export function demoTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  DEMO_CHARACTERS.forEach((c, i) => (vocab[c] = i));
  const added = (content: string, id: number, special: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  const addedTokens = [
    ...DEMO_WORD_TOKENS.map((content, i) => added(content, DEMO_CHARACTERS.length + i, false)),
    ...DEMO_SPECIAL_TOKENS.map((content, i) => added(content, DEMO_CHARACTERS.length + DEMO_WORD_TOKENS.length + i, true)),
  ];
  for (const t of addedTokens) vocab[t.content] = t.id;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Fuse" },
    model: {
      type: "BPE", dropout: null, unk_token: "<|unk|>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: [],
    },
  };
}

export function demoTokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: null,
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    unk_token: "<|unk|>",
    model_max_length: 4096,
    chat_template: CHATML_TEMPLATE,
  };
}

/** Where the built-in model lives unless told otherwise. */
export function defaultDemoModelDir(): string {
  const cache = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache");
  return path.join(cache, "octo-native", "demo-model");
}

/**
 * Makes the demo model directory if it is not there yet (random weights from `seed`) and
 * returns its path. An existing directory is reused as it is.
 */
export async function ensureDemoModel(dir = defaultDemoModelDir(), seed = 0): Promise<string> {
  if (fs.existsSync(path.join(dir, "config.json")) && fs.existsSync(path.join(dir, "tokenizer.json"))) return dir;
  const model = await Model.create(DEMO_MODEL_SPEC, seed, { device: "cpu" });
  try {
    // A directory without a tokenizer is one an earlier call did not finish: redo it.
    await model.save(dir, { overwrite: true });
  } finally {
    model.dispose();
  }
  // Written after the weights: a directory with a tokenizer is a complete one.
  writeDemoTokenizer(dir);
  return dir;
}

/** Writes the demo tokenizer (tokenizer.json + tokenizer_config.json) into a model directory. */
export function writeDemoTokenizer(dir: string): void {
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(demoTokenizerConfig(), null, 2) + "\n");
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(demoTokenizerJson()) + "\n");
}
