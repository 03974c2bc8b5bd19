// The rollout sampler (docs/methods.md §3): batched generation of n samples per prompt over one
// preallocated KV cache, and the token sampling it uses.
//
// One call: every prompt is prefilled once (left-padded batches; positions count real
// tokens), its cache rows are copied out to its n samples, then all samples decode in
// lockstep, one token per live row per step. Finished rows are dropped from the batch (the
// cache is compacted when fewer than 3/4 of its rows are live), so they stop costing compute.
//
// Shape legend: R = sample rows, B = prompts in a prefill chunk, T = tokens, P = prompt slots,
// N = maxNewTokens, V = vocab, W = longest stop sequence.
#pragma once

#include "core/kv_cache.h"
#include "core/model.h"

namespace octo {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double topP = 1.0;         // nucleus mass kept (1 = off)
  int64_t topK = 0;          // keep the k most likely tokens (0 = off)
  double minP = 0.0;         // drop tokens below minP * max probability (0 = off)
  int64_t maxNewTokens = 256;
  std::vector<int64_t> eosTokenIds;
  // A sample stops ("stop") once its generated tokens end with one of these id sequences.
  // Stop *strings* are text: lib/engine/stop-strings.ts encodes them and re-checks decoded text.
  std::vector<std::vector<int64_t>> stopSequences;
};

struct GenerationRequest {
  std::vector<int64_t> promptIds;
  int64_t samples = 1;  // n: samples sharing this prompt's prefill
  // Sample j draws its uniforms from the counter-based stream (seed, j): the same seed and
  // sample index give the same tokens whatever else is in the batch.
  uint64_t seed = 0;
};

enum class FinishReason : uint8_t { kRunning = 0, kEos = 1, kStop = 2, kLength = 3 };
const char* finishReasonName(FinishReason reason);

struct SampleResult {
  std::vector<int64_t> tokens;
  // log pi(token) under softmax(logits / T), T = temperature (1 when greedy), before any
  // top-k/top-p/min-p filtering: the same convention as the trainer's log-prob op.
  std::vector<float> logprobs;
  FinishReason finishReason = FinishReason::kLength;
};

struct GenerationStats {
  int64_t promptTokens = 0;        // Σ prompt lengths over requests (each prompt once, not per sample)
  int64_t reusedPromptTokens = 0;  // of those, taken from the prefix cache instead of computed
  int64_t prefillSlots = 0;        // token slots run through the model in prefill, padding included
  int64_t prefillChunks = 0;
  int64_t decodeSteps = 0;         // forwards after the prefill (recompute: every forward)
  int64_t decodeRowSteps = 0;      // Σ rows in the batch over those forwards (the compute spent)
  int64_t generatedTokens = 0;     // Σ tokens returned
  int64_t compactions = 0;         // times finished rows were dropped from the cache
};

class PrefixCache;

struct GenerationOptions {
  // Prompts reuse the keys/values of the longest prefix this cache holds; afterwards the cache
  // holds this call's sequences (prompt + generated tokens) instead of its previous ones.
  PrefixCache* prefixCache = nullptr;
  // No KV cache: a full forward over every sequence for every token. The reference the cached
  // path must agree with, and the bench baseline.
  bool recompute = false;
  // Decode with the static-shape layout of KVCache::writeSlot (always on CUDA, where the step
  // is captured in a CUDA graph unless OCTO_NATIVE_CUDA_GRAPHS=0; on CPU only to test the layout).
  bool staticShapes = false;
  // Prompt tokens (padding included) run through the model at once in prefill: bounds the
  // activation memory of long or many prompts. Larger batches are split into chunks.
  int64_t prefillChunkTokens = 8192;
};

struct GenerationOutput {
  std::vector<std::vector<SampleResult>> samples;  // [request][sample]
  GenerationStats stats;
};

// logits [B, V] fp32 -> the same with filtered-out entries at -inf (temperature applied).
// Filters in transformers' order: top-k, then top-p on what is left, then min-p.
at::Tensor filterLogits(const at::Tensor& logits, const SamplingParams& params);

// One token per row of `logits` [B, V] by inverse-CDF sampling against `uniforms` [B] in [0, 1)
// (argmax when greedy; `uniforms` is then not read).
at::Tensor sampleTokens(const at::Tensor& logits, const SamplingParams& params, const at::Tensor& uniforms);

// Uniforms [R] in [0, 1) of draw number `step` ([1] long tensor) of the streams `streamKeys`
// [R, 2] (long, two 32-bit halves). Counter-based: pure integer tensor ops on the keys' device,
// no generator state and no host sync, so it can live inside a CUDA graph.
at::Tensor counterUniforms(const at::Tensor& streamKeys, const at::Tensor& step);
// The stream key of sample `sample` of a request seeded `seed` (splitmix64 of both).
uint64_t sampleStreamKey(uint64_t seed, int64_t sample);

GenerationOutput generate(const DecoderModel& model, const std::vector<GenerationRequest>& requests,
                          const SamplingParams& params, const GenerationOptions& options = {});

}  // namespace octo
