#include "core/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>

namespace octo {

at::Tensor filterLogits(const at::Tensor& logits, const SamplingParams& params) {
  const float minusInf = -std::numeric_limits<float>::infinity();
  at::Tensor scaled = logits / (params.temperature > 0 ? params.temperature : 1.0);
  const int64_t V = scaled.size(-1);
  if (params.topK > 0 && params.topK < V) {
    at::Tensor kth = std::get<0>(scaled.topk(params.topK, -1)).narrow(-1, params.topK - 1, 1);  // [B, 1]
    scaled = scaled.masked_fill(scaled < kth, minusInf);
  }
  if (params.minP > 0) {
    at::Tensor probs = at::softmax(scaled, -1);
    at::Tensor floor = std::get<0>(probs.max(-1, /*keepdim=*/true)) * params.minP;
    scaled = scaled.masked_fill(probs < floor, minusInf);
  }
  if (params.topP < 1.0) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    at::Tensor cumulative = at::softmax(sorted, -1).cumsum(-1);
    // Drop a token when the mass before it already reaches top_p; the first token always stays.
    at::Tensor drop = (cumulative - at::softmax(sorted, -1)) >= params.topP;
    scaled = scaled.masked_fill(at::zeros_like(drop).scatter(-1, order, drop), minusInf);
  }
  return scaled;
}

at::Tensor sampleTokens(const at::Tensor& logits, const SamplingParams& params, const at::Tensor& uniforms) {
  if (params.temperature <= 0) return logits.argmax(-1);
  at::Tensor probs = at::softmax(filterLogits(logits, params), -1);             // [B, V]
  at::Tensor cdf = probs.cumsum(-1);
  at::Tensor target = uniforms.to(cdf.device(), cdf.scalar_type()).unsqueeze(-1) * cdf.narrow(-1, cdf.size(-1) - 1, 1);
  at::Tensor token = at::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(-1);
  return token.clamp_max(cdf.size(-1) - 1);
}

std::vector<GenerationResult> generate(const DecoderModel& model, const std::vector<GenerationRequest>& requests,
                                       const SamplingParams& params) {
  c10::InferenceMode inference;
  const at::Device device = model.device();
  const double temperature = params.temperature > 0 ? params.temperature : 1.0;
  std::vector<GenerationResult> results;
  for (const auto& request : requests) {
    TORCH_CHECK(!request.promptIds.empty(), "a generation request has an empty prompt");
    for (int64_t id : request.promptIds)
      TORCH_CHECK(id >= 0 && id < model.spec().vocabSize, "prompt token id ", id, " is outside the model's vocabulary [0, ",
                  model.spec().vocabSize, ")");
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(request.seed);
    const int64_t promptLength = static_cast<int64_t>(request.promptIds.size());
    KVCache cache = model.newCache(1, promptLength + params.maxNewTokens);
    at::Tensor input = at::tensor(request.promptIds, at::kLong).view({1, promptLength});
    at::Tensor positions = at::arange(promptLength, at::kLong).view({1, promptLength});
    GenerationResult result;
    result.finishReason = "length";
    for (int64_t step = 0; step < params.maxNewTokens; ++step) {
      at::Tensor hidden = model.hiddenStates(input, positions, &cache);
      at::Tensor logits = model.logits(hidden.select(1, hidden.size(1) - 1));  // [1, V]
      at::Tensor uniforms = at::rand({1}, generator);
      at::Tensor token = sampleTokens(logits, params, uniforms);              // [1]
      at::Tensor logprob = at::log_softmax(logits / temperature, -1).gather(-1, token.unsqueeze(-1));
      const int64_t id = token.item<int64_t>();
      result.tokens.push_back(id);
      result.logprobs.push_back(logprob.item<float>());
      if (std::find(params.eosTokenIds.begin(), params.eosTokenIds.end(), id) != params.eosTokenIds.end()) {
        result.finishReason = "eos";
        break;
      }
      input = token.view({1, 1}).to(at::kLong);
      positions = at::full({1, 1}, cache.length, at::kLong);
    }
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace octo
