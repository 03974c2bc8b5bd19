/**
 * Sampling parameters and generation requests: validated here, executed by the engine
 * (native/core/sampler.*). SPEC §3.
 */
import { z } from "zod";

export const samplingParamsSchema = z.strictObject({
  /** softmax temperature; 0 = greedy */
  temperature: z.number().min(0).default(1),
  /** nucleus sampling: smallest set of tokens whose probability reaches topP (1 = off) */
  topP: z.number().gt(0).max(1).default(1),
  /** keep only the topK most likely tokens (0 = off) */
  topK: z.number().int().min(0).default(0),
  /** drop tokens whose probability is below minP × the top token's (0 = off) */
  minP: z.number().min(0).max(1).default(0),
  /** new tokens per sample at most */
  maxNewTokens: z.number().int().positive().default(256),
  /** generation ends at any of these ids */
  eosTokenIds: z.array(z.number().int().min(0)).default([]),
  /** base seed; request i without its own seed uses seed + i */
  seed: z.number().int().min(0).default(0),
});

export type SamplingParams = z.infer<typeof samplingParamsSchema>;

export function resolveSamplingParams(params: Partial<SamplingParams>): SamplingParams {
  const parsed = samplingParamsSchema.safeParse(params);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new RangeError(`sampling parameter '${issue.path.join(".")}': ${issue.message}`);
  }
  return parsed.data;
}

export interface GenerationRequest {
  promptIds: Int32Array;
  /** per-request seed: the same seed on the same device gives the same tokens */
  seed?: number;
}

export interface GenerationResult {
  tokens: Int32Array;
  /** log-prob of each sampled token under softmax(logits / temperature), before top-k/p filtering */
  logprobs: Float32Array;
  finishReason: "eos" | "length";
}
