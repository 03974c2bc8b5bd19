// Token sampling and a simple cached generation loop (one request at a time).
// The batched rollout sampler (shared prefill across n samples, CUDA graphs) replaces the
// loop, not this interface: requests in, per-sample tokens + log-probs + finish reason out.
#pragma once

#include "core/model.h"

namespace octo {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double topP = 1.0;         // nucleus mass kept (1 = off)
  int64_t topK = 0;          // keep the k most likely tokens (0 = off)
  double minP = 0.0;         // drop tokens below minP * max probability (0 = off)
  int64_t maxNewTokens = 256;
  std::vector<int64_t> eosTokenIds;
};

struct GenerationRequest {
  std::vector<int64_t> promptIds;
  uint64_t seed = 0;
};

struct GenerationResult {
  std::vector<int64_t> tokens;
  // log pi(token) under softmax(logits / T), T = temperature (1 when greedy), before any
  // top-k/top-p/min-p filtering: the same convention as the trainer's log-prob op.
  std::vector<float> logprobs;
  std::string finishReason;  // "eos" | "length"
};

// logits [B, V] fp32 -> the same with filtered-out entries at -inf (temperature applied).
at::Tensor filterLogits(const at::Tensor& logits, const SamplingParams& params);

// One token per row of `logits` [B, V] by inverse-CDF sampling against `uniforms` [B] in [0, 1)
// (drawn from the request's seeded generator, so results do not depend on the device's RNG).
at::Tensor sampleTokens(const at::Tensor& logits, const SamplingParams& params, const at::Tensor& uniforms);

std::vector<GenerationResult> generate(const DecoderModel& model, const std::vector<GenerationRequest>& requests,
                                       const SamplingParams& params);

}  // namespace octo
