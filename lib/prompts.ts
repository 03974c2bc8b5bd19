/** Prompt building (SPEC §9): the instruction template, then the tokenizer's chat template. */
import type { Example } from "./data";
import type { TextTokenizer } from "./tokenizer";

export interface PromptOptions {
  /** the user message; {problem} is replaced by the problem text */
  template: string;
  /** wrap in the tokenizer's chat template with the generation prompt */
  chat: boolean;
  chatTemplateVariables?: Record<string, unknown>;
}

export function promptText(example: Example, template: string): string {
  return template.split("{problem}").join(example.problem);
}

/** Token ids of the prompt of `example`. Datasets that carry chat messages (verl) keep them. */
export function encodePrompt(example: Example, tokenizer: TextTokenizer, options: PromptOptions): Int32Array {
  if (!options.chat) return tokenizer.encode(promptText(example, options.template), { addSpecialTokens: false });
  const messages = example.messages ?? [{ role: "user", content: promptText(example, options.template) }];
  return tokenizer.encodeChat(messages, { addGenerationPrompt: true, extra: options.chatTemplateVariables });
}
