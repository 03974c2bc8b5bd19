/**
 * Sampling parameters and generation requests: validated here, executed by the engine's
 * rollout sampler (native/core/sampler.*). docs/methods.md §3.
 */
import { z } from "zod";

import type { GenerationStats, ModelSpec, NativePrefixCache } from "../native";

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

/** Bytes per element of the engine's compute dtypes (the model handle's `dtype`, c10 names). */
const COMPUTE_DTYPE_BYTES: Readonly<Record<string, number>> = { Float: 4, BFloat16: 2, Half: 2, Double: 8 };

/** The results of one call are indexed by 32-bit offsets (NativeGenerationOutput.sampleOffsets). */
const MAX_TOKENS_PER_CALL = 2 ** 31 - 1;

export interface GenerationShape {
  /** samples over all requests: the rows of the batch */
  rows: number;
  longestPrompt: number;
  maxNewTokens: number;
  /** false for recompute, which keeps no KV cache */
  kvCache: boolean;
}

/**
 * What the engine allocates at the start of a generate call (native/core/sampler.cpp): the KV
 * cache, keys and values of every layer for every row and slot (each prompt's slots, then one
 * per new token but the last), its padding mask, the [rows, maxNewTokens] token and log-prob
 * state (int64 + fp32) and the first logits. A lower bound of the call's memory (also the
 * memory planner's KV-cache term, lib/engine/memory-plan.ts).
 */
export function generationBytes(spec: ModelSpec, dtype: string, shape: GenerationShape): number {
  const elementBytes = COMPUTE_DTYPE_BYTES[dtype] ?? 4;
  const slotBytes = shape.kvCache ? spec.numLayers * 2 * spec.numKvHeads * spec.headDim * elementBytes + 1 : 0;
  const rowBytes = slotBytes * (shape.longestPrompt + shape.maxNewTokens - 1) + 12 * shape.maxNewTokens + 4 * spec.vocabSize;
  return shape.rows * rowBytes;
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GiB`;
const rowCount = (rows: number) => `${rows} ${rows === 1 ? "row" : "rows"}`;

/**
 * Refuses a generate call whose allocations do not fit in `availableBytes` (when known) or
 * whose results cannot be indexed, saying what would fit: the engine would otherwise fail with
 * an allocator message (std::bad_alloc) that names neither n nor maxNewTokens.
 */
export function checkGenerationFits(spec: ModelSpec, dtype: string, shape: GenerationShape, availableBytes: number | undefined): void {
  const { rows, longestPrompt, maxNewTokens } = shape;
  const asked = `${rowCount(rows)} (n summed over the requests) × maxNewTokens ${maxNewTokens}`;
  const needed = generationBytes(spec, dtype, shape);
  if (availableBytes !== undefined && needed > availableBytes) {
    const maxRows = Math.floor(availableBytes / generationBytes(spec, dtype, { ...shape, rows: 1 }));
    const fixedPerRow = generationBytes(spec, dtype, { ...shape, rows: 1, maxNewTokens: 1 });
    const perNewToken = generationBytes(spec, dtype, { ...shape, rows: 1, maxNewTokens: 2 }) - fixedPerRow;
    const maxNew = Math.floor((availableBytes / rows - fixedPerRow) / perNewToken) + 1;
    const fits = [
      maxRows >= 1 ? `at maxNewTokens ${maxNewTokens} at most ${rowCount(maxRows)} fit` : `not one row fits at maxNewTokens ${maxNewTokens}`,
      maxNew >= 1 ? `at ${rowCount(rows)}, maxNewTokens up to ${maxNew}` : `no maxNewTokens fits at ${rowCount(rows)}`,
    ];
    throw new RangeError(
      `generate: ${asked} (longest prompt ${longestPrompt} tokens) needs at least ${gib(needed)} for the KV cache and sampling state, ` +
        `but ${gib(availableBytes)} of memory is available; ${fits.join(", and ")}. Lower n, the requests per call or maxNewTokens`,
    );
  }
  if (rows * maxNewTokens > MAX_TOKENS_PER_CALL)
    throw new RangeError(
      `generate: ${asked} is more than the ${MAX_TOKENS_PER_CALL} tokens one call can return; at this maxNewTokens ` +
        `at most ${rowCount(Math.floor(MAX_TOKENS_PER_CALL / maxNewTokens))} can be returned: lower n, split the requests over several calls, or lower maxNewTokens`,
    );
}
