/**
 * Sampling parameters and generation requests: validated here, executed by the engine's
 * rollout sampler (native/core/sampler.*). docs/methods.md §3.
 */
import { z } from "zod";

import type { GenerationStats, NativePrefixCache } from "../native";

export const samplingParamsSchema = z.strictObject({
  /** softmax temperature; 0 = greedy */
  temperature: z.number().min(0).default(1),
  /** nucleus sampling: smallest set of tokens whose probability reaches topP (1 = off); after top-k */
  topP: z.number().gt(0).max(1).default(1),
  /** keep only the topK most likely tokens (0 = off) */
  topK: z.number().int().min(0).default(0),
  /** drop tokens whose probability is below minP × the top token's (0 = off) */
  minP: z.number().min(0).max(1).default(0),
  /** new tokens per sample at most */
  maxNewTokens: z.number().int().positive().default(256),
  /** generation ends at any of these ids (finish reason "eos") */
  eosTokenIds: z.array(z.number().int().min(0)).default([]),
  /**
   * Token-id sequences that end a sample (finish reason "stop") once its generated tokens end
   * with one. Stop *strings* are text: see lib/engine/stop-strings.ts, which encodes them to these.
   */
  stopSequences: z.array(z.array(z.number().int().min(0)).min(1)).default([]),
  /** base seed; request i without its own seed uses seed + i */
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
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
  /** samples of this prompt (default 1); the prompt is prefilled once and shared by all of them */
  n?: number;
  /**
   * Per-request seed. Sample j draws from the stream (seed, j), so the same seed and sample
   * index give the same tokens on the same device whatever else is in the batch.
   */
  seed?: number;
}

export type FinishReason = "eos" | "stop" | "length";

/** One sample. */
export interface GenerationResult {
  tokens: Int32Array;
  /** log-prob of each sampled token under softmax(logits / temperature), before top-k/p filtering */
  logprobs: Float32Array;
  finishReason: FinishReason;
}

export type { GenerationStats };

/** A prefix cache (Model.createPrefixCache): keys and values kept between generate calls. */
export type PrefixCache = NativePrefixCache;

export interface GenerateOptions {
  /**
   * Continuation (multi-turn): each prompt reuses the keys and values of the longest prefix it
   * shares with a sequence (prompt + generated tokens) of the last call given this cache; after
   * the call the cache holds this call's sequences instead.
   */
  prefixCache?: PrefixCache;
  /** no KV cache: a full forward per token (the reference the cached path must equal; a bench baseline) */
  recompute?: boolean;
  /** static-shape decode layout that CUDA graphs need (always on CUDA; on CPU only to test it) */
  staticShapes?: boolean;
  /** prompt tokens (padding included) per prefill forward, bounding its memory (default 8192) */
  prefillChunkTokens?: number;
}
