/**
 * Stop strings (docs/methods.md §3): text that ends a sample, e.g. "</answer>" or "\n\nQuestion:".
 *
 * Two halves, because text and tokens do not map one to one:
 *  - the engine stops a sample as soon as its generated tokens end with the stop string's
 *    own encoding (stopSequencesFor), so a finished sample stops costing compute;
 *  - a stop string can also be produced by other tokenisations (".\n\n" merged into one
 *    token, say), which no token match sees; truncateAtStopStrings checks the decoded text
 *    and cuts the sample right after the token that completes the first stop string.
 * The stop string itself stays in the sample (tokens and text), so a policy learns to emit it.
 */
import type { GenerationResult } from "./sampling";

/** What these helpers need of a tokenizer (TextTokenizer has it). */
export interface StopStringTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Int32Array;
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
}

/** Token-id sequences for SamplingParams.stopSequences: each stop string's own encoding. */
export function stopSequencesFor(tokenizer: StopStringTokenizer, stops: string[]): number[][] {
  const sequences: number[][] = [];
  for (const stop of stops) {
    if (stop.length === 0) throw new RangeError("a stop string is empty");
    const ids = Array.from(tokenizer.encode(stop, { addSpecialTokens: false }));
    if (ids.length > 0 && !sequences.some((s) => s.join() === ids.join())) sequences.push(ids);
  }
  return sequences;
}

/**
 * The sample cut after the token that completes the first occurrence of any stop string in
 * its decoded text, with finish reason "stop"; the sample itself when its text holds none.
 * Binary search over prefixes (decoding is prefix-monotone for the tokenizers we load), so
 * O(log length) decodes.
 */
export function truncateAtStopStrings(sample: GenerationResult, stops: string[], decode: (ids: Int32Array) => string): GenerationResult {
  if (stops.length === 0) return sample;
  const holdsStop = (length: number) => {
    const text = decode(sample.tokens.subarray(0, length));
    return stops.some((s) => text.includes(s));
  };
  if (!holdsStop(sample.tokens.length)) return sample;
  let low = 1, high = sample.tokens.length;  // the answer lies in [low, high]
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (holdsStop(middle)) high = middle;
    else low = middle + 1;
  }
  return { tokens: sample.tokens.subarray(0, low), logprobs: sample.logprobs.subarray(0, low), finishReason: "stop" };
}

/** truncateAtStopStrings over every sample of a generate() result. */
export function applyStopStrings(results: GenerationResult[][], stops: string[], tokenizer: StopStringTokenizer): GenerationResult[][] {
  if (stops.length === 0) return results;
  const decode = (ids: Int32Array) => tokenizer.decode(ids, { skipSpecialTokens: false });
  return results.map((samples) => samples.map((s) => truncateAtStopStrings(s, stops, decode)));
}
