/**
 * Text tokenizer and chat template (docs/methods.md §2: tokenization is a TS concern).
 *
 * Loads a Hugging Face tokenizer directory — `tokenizer.json` plus optional
 * `tokenizer_config.json` — with `@huggingface/tokenizers`, and renders the config's
 * Jinja `chat_template` with `@huggingface/jinja`. Token ids leave this module as
 * Int32Array, the dtype the engine takes.
 */
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import * as fs from "fs";
import * as path from "path";

import { readRegularFile } from "../util/files";

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** End with the assistant header so the model's next tokens are its reply. */
  addGenerationPrompt?: boolean;
  /** More template variables, e.g. `{ enable_thinking: false }` for Qwen3. */
  extra?: Record<string, unknown>;
}

/**
 * Tokens that end a generation in the common chat formats (ChatML/Qwen, GPT-2 style
 * base models, Llama 3). A model may stop on any of them, not only on the config's
 * `eos_token`: Qwen3's config names `<|im_end|>`, yet its base model ends documents
 * with `<|endoftext|>`.
 */
const KNOWN_END_TOKENS = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>"];

/** A special token in tokenizer_config.json is either its text or `{ content: text, ... }`. */
function specialTokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return undefined;
}

function readJsonFile(file: string, what: string): object {
  let text: string;
  try {
    text = readRegularFile(file, "utf8");
  } catch (err) {
    throw new TokenizerError(
      `${file}: cannot read ${what} (${(err as Error).message}); ` +
        `point the tokenizer path at a Hugging Face model directory that contains it`,
    );
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new Error("top level is not a JSON object");
    }
    return parsed;
  } catch (err) {
    throw new TokenizerError(
      `${file}: ${what} is not valid JSON (${(err as Error).message}); ` +
        `re-download it from the model repository`,
    );
  }
}

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly config: Record<string, unknown>;
  /** Where the tokenizer came from, for error messages. */
  private readonly source: string;
  private readonly vocabSizeWithAdded: number;
  private compiledChatTemplate: Template | undefined;

  private constructor(tokenizer: Tokenizer, config: Record<string, unknown>, source: string) {
    this.tokenizer = tokenizer;
    this.config = config;
    this.source = source;
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSizeWithAdded = maxId + 1;
  }

  /**
   * Loads `dir/tokenizer.json` and, if present, `dir/tokenizer_config.json`. A
   * `dir/chat_template.jinja` (where newer transformers saves the template) supplies
   * the chat template when the config has none.
   */
  static fromDir(dir: string): TextTokenizer {
    const tokenizerJson = readJsonFile(path.join(dir, "tokenizer.json"), "tokenizer.json");
    const configFile = path.join(dir, "tokenizer_config.json");
    const config: Record<string, unknown> = fs.existsSync(configFile)
      ? { ...readJsonFile(configFile, "tokenizer_config.json") }
      : {};
    const templateFile = path.join(dir, "chat_template.jinja");
    if (config.chat_template === undefined && fs.existsSync(templateFile)) {
      try {
        config.chat_template = readRegularFile(templateFile, "utf8");
      } catch (err) {
        throw new TokenizerError(`${templateFile}: cannot read the chat template (${(err as Error).message})`);
      }
    }
    return TextTokenizer.fromJson(tokenizerJson, config, dir);
  }

  static fromJson(tokenizerJson: object, tokenizerConfig: object = {}, source = "<in-memory tokenizer.json>"): TextTokenizer {
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new TokenizerError(
        `${source}: tokenizer.json could not be loaded (${(err as Error).message}); ` +
          `check that it is a Hugging Face "fast" tokenizer.json`,
      );
    }
    return new TextTokenizer(tokenizer, { ...tokenizerConfig }, source);
  }

  /** `addSpecialTokens` (default true, as in transformers) applies the post-processor, e.g. a BOS. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Int32Array {
    const { ids } = this.tokenizer.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true });
    return Int32Array.from(ids);
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    // The library rejects an empty list; a sample that ended at once (EOS first) decodes to "".
    if (ids.length === 0) return "";
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /** Largest token id + 1, added tokens included: the smallest embedding that covers every id. */
  get vocabSize(): number {
    return this.vocabSizeWithAdded;
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /**
   * Ids that end a generation: the config's `eos_token` first, then each of
   * KNOWN_END_TOKENS that is in the vocabulary, without duplicates.
   */
  get eosTokenIds(): number[] {
    const candidates = [specialTokenText(this.config.eos_token), ...KNOWN_END_TOKENS];
    const ids: number[] = [];
    for (const token of candidates) {
      const id = token === undefined ? undefined : this.tokenToId(token);
      if (id !== undefined && !ids.includes(id)) ids.push(id);
    }
    return ids;
  }

  get padTokenId(): number | undefined {
    const token = specialTokenText(this.config.pad_token);
    return token === undefined ? undefined : this.tokenToId(token);
  }

  /** Renders the config's `chat_template` the way transformers' `apply_chat_template(tokenize=False)` does. */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    return this.chatTemplate().render({
      ...opts.extra,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: specialTokenText(this.config.bos_token),
      eos_token: specialTokenText(this.config.eos_token),
    });
  }

  /** The rendered template already holds its special tokens, so none are added again. */
  encodeChat(messages: ChatMessage[], opts: ChatTemplateOptions = {}): Int32Array {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }

  private chatTemplate(): Template {
    if (this.compiledChatTemplate === undefined) {
      const source = this.chatTemplateSource();
      try {
        this.compiledChatTemplate = new Template(source);
      } catch (err) {
        throw new TokenizerError(
          `${this.source}: chat_template in tokenizer_config.json is not valid Jinja (${(err as Error).message})`,
        );
      }
    }
    return this.compiledChatTemplate;
  }

  /** `chat_template` is a string, or (older configs) a list of `{ name, template }` with a "default". */
  private chatTemplateSource(): string {
    const value = this.config.chat_template;
    if (typeof value === "string") return value;
    if (Array.isArray(value)) {
      const named = value.find((entry) => entry?.name === "default");
      if (typeof named?.template === "string") return named.template;
    }
    throw new TokenizerError(
      `${this.source}: tokenizer_config.json has no chat_template; ` +
        `use the instruct model's tokenizer directory or render prompts without a chat template`,
    );
  }
}
