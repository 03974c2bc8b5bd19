#include "core/lora.h"

#include "core/few_row_linear.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <cmath>
#include <mutex>

namespace octo {

namespace {

uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A generator of `device`'s kind seeded with `seed`: masks that depend on the seed alone, so a
// checkpointed layer's recompute and a resumed run draw the same ones. CUDA's is a clone of the
// device's default generator (no CUDA header needed here), reseeded.
at::Generator seededGenerator(const at::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Generator source = at::globalContext().defaultGenerator(device);
  at::Generator generator;
  {
    std::lock_guard<std::mutex> lock(source.mutex());
    generator = source.clone();
  }
  generator.set_current_seed(seed);
  return generator;
}

}  // namespace

bool LoraConfig::targets(const std::string& module) const {
  return std::find(targetModules.begin(), targetModules.end(), module) != targetModules.end();
}

void checkLoraConfig(const LoraConfig& c) {
  TORCH_CHECK(c.rank > 0, "lora.rank must be a positive integer (got ", c.rank, ")");
  TORCH_CHECK(std::isfinite(c.alpha) && c.alpha > 0, "lora.alpha must be a positive number (got ", c.alpha, ")");
  TORCH_CHECK(c.dropout >= 0 && c.dropout < 1, "lora.dropout must be in [0, 1) (got ", c.dropout, ")");
  TORCH_CHECK(!c.targetModules.empty(), "lora.targetModules must name at least one projection");
  for (size_t i = 0; i < c.targetModules.size(); ++i) {
    const std::string& m = c.targetModules[i];
    TORCH_CHECK(std::find(kLoraModules.begin(), kLoraModules.end(), m) != kLoraModules.end(), "lora.targetModules: '", m,
                "' is not a projection of this model (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
    TORCH_CHECK(std::find(c.targetModules.begin(), c.targetModules.begin() + i, m) == c.targetModules.begin() + i,
                "lora.targetModules names '", m, "' twice");
  }
}

std::string projectionName(int64_t layer, const std::string& module) {
  const bool attention = module == "q_proj" || module == "k_proj" || module == "v_proj" || module == "o_proj";
  return "model.layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") + module;
}

std::string loraTensorName(int64_t layer, const std::string& module, char which) {
  return "base_model.model." + projectionName(layer, module) + ".lora_" + which + ".weight";
}

int64_t loraModuleSeed(int64_t forwardSeed, int64_t layer, int64_t module) {
  const uint64_t key = mix64(mix64(static_cast<uint64_t>(forwardSeed)) + static_cast<uint64_t>(layer * 16 + module));
  return static_cast<int64_t>(key >> 1);  // non-negative
}

at::Tensor addLora(at::Tensor y, const at::Tensor& x, const LoraPair& lora, const LoraConfig& config, int64_t dropoutSeed) {
  if (!lora.defined()) return y;
  at::Tensor input = x;
  if (dropoutSeed >= 0 && config.dropout > 0) {
    // nn.Dropout: zero with probability p, scale the kept values by 1 / (1 - p).
    at::Generator generator = seededGenerator(x.device(), static_cast<uint64_t>(dropoutSeed));
    at::Tensor keep = at::empty_like(x).bernoulli_(1.0 - config.dropout, generator);
    input = x * keep * (1.0 / (1.0 - config.dropout));
  }
  const at::Tensor down = octo::linear(input, lora.A);  // [..., r]
  if (fewRowLinearApplies(down, lora.B)) return y.add_(fewRowLinear(down, lora.B, {}), config.scale());  // a decode step's few rows
  // One GEMM for B and the add: y + scale · (A x) Bᵀ, the same call with and without autograd, so a
  // rollout's log-probs and the trainer's agree. (y's leading dims merge even when it is a slice
  // of the fused QKV output: a view, so the no-grad form writes into y itself.)
  const int64_t out = lora.B.size(0), rank = lora.B.size(1);
  const at::Tensor y2 = y.view({-1, out}), down2 = down.reshape({-1, rank});
  if (!at::GradMode::is_enabled()) {
    y2.addmm_(down2, lora.B.t(), 1.0, config.scale());
    return y;
  }
  return at::addmm(y2, down2, lora.B.t(), 1.0, config.scale()).view(y.sizes());
}

LoraPair initialLoraPair(int64_t in, int64_t out, int64_t rank, at::Generator& generator) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  return {at::empty({rank, in}).uniform_(-bound, bound, generator), at::zeros({out, rank})};
}

at::Tensor mergeLora(const at::Tensor& weight, const LoraPair& lora, double scale) {
  at::NoGradGuard noGrad;
  const at::Tensor merged = at::addmm(weight.to(at::kFloat), lora.B.to(at::kFloat), lora.A.to(at::kFloat), 1.0, scale);
  return merged.to(weight.scalar_type());
}

}  // namespace octo
