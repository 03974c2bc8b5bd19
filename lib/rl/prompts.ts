/** Prompt building (docs/methods.md §9): the instruction template, then the tokenizer's chat template. */
import type { ChatMessage, TextTokenizer } from "../engine/tokenizer";
import { SCORE_INSTRUCTION } from "../methods/score/score";
import type { RunConfig } from "./config";
import type { Example } from "./data";

export interface PromptOptions {
  /** the user message; {problem} is replaced by the problem text */
  template: string;
  /** wrap in the tokenizer's chat template with the generation prompt */
  chat: boolean;
  chatTemplateVariables?: Record<string, unknown>;
}

/**
 * The prompt options of a run's config (data.promptTemplate, data.chat, data.chatTemplateVariables).
 * No chat template variables set leaves the key out (the same prompt either way; recorded eval settings stay as they were).
 */
export function promptOptions(config: RunConfig): PromptOptions {
  const { promptTemplate: template, chat, chatTemplateVariables } = config.data;
  return Object.keys(chatTemplateVariables).length > 0 ? { template, chat, chatTemplateVariables } : { template, chat };
}

/**
 * SCoRe's turn-2 instruction (docs/methods.md §6.2), as the evaluation's two-turn mode asks it: the paper's
 * sentence (it never says whether the first attempt was right) plus where to put the answer.
 */
export const DEFAULT_CORRECTION_INSTRUCTION = `${SCORE_INSTRUCTION} Put your final answer within \\boxed{}.`;

export function promptText(example: Example, template: string): string {
  return template.split("{problem}").join(example.problem);
}

/** The chat messages of the prompt of `example`. Datasets that carry chat messages (verl) keep them. */
export function promptMessages(example: Example, template: string): ChatMessage[] {
  return example.messages ?? [{ role: "user", content: promptText(example, template) }];
}

/** Token ids of the prompt of `example`. */
export function encodePrompt(example: Example, tokenizer: TextTokenizer, options: PromptOptions): Int32Array {
  if (!options.chat) return tokenizer.encode(promptText(example, options.template), { addSpecialTokens: false });
  return tokenizer.encodeChat(promptMessages(example, options.template), { addGenerationPrompt: true, extra: options.chatTemplateVariables });
}
