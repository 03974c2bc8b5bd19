// Low-rank adapters (LoRA) on the projections of a frozen DecoderModel, in PEFT's layout.
//
// A targeted projection y = W x + b becomes y = W x + b + (alpha / r) · B A dropout(x), with
// A [r, in] and B [out, r] (PEFT's lora_A / lora_B): one pair per Hugging Face module, even where
// the engine fuses projections (q, k and v run as one GEMM; their adapters stay three pairs).
// W is never changed: the reference policy is the same weights with the adapters switched off.
// Shape letters as in model.h (r = adapter rank).
#pragma once

#include "core/torch_prelude.h"

#include <array>

namespace octo {

// The projections an adapter may sit on, in PEFT's module names (the last part of the HF name).
inline constexpr std::array<const char*, 7> kLoraModules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj"};

struct LoraConfig {
  int64_t rank = 0;                       // r
  double alpha = 16;                      // lora_alpha: the update is scaled by alpha / r
  double dropout = 0;                     // lora_dropout on the adapter's input, in training forwards only
  std::vector<std::string> targetModules; // names from kLoraModules
  uint64_t seed = 0;                      // of A's initialisation and the dropout masks
  double scale() const { return alpha / static_cast<double>(rank); }
  bool targets(const std::string& module) const;
};

// One adapter: A [r, in], B [out, r]; undefined on a projection without one.
struct LoraPair {
  at::Tensor A, B;
  bool defined() const { return A.defined(); }
};

// Checks rank > 0, alpha > 0, 0 <= dropout < 1 and known, distinct module names; throws naming the field.
void checkLoraConfig(const LoraConfig& config);

// The Hugging Face name of a projection: model.layers.<layer>.<self_attn|mlp>.<module>
std::string projectionName(int64_t layer, const std::string& module);
// PEFT's tensor name: base_model.model.<projectionName>.lora_<A|B>.weight
std::string loraTensorName(int64_t layer, const std::string& module, char which);

// Adds the adapter's output to `y` (the projection's output for input `x`):
// y + scale · B A dropout(x). `dropoutSeed` < 0: no dropout (inference; the reference's own
// forwards never see adapters at all). In place when no gradient is recorded.
at::Tensor addLora(at::Tensor y, const at::Tensor& x, const LoraPair& lora, const LoraConfig& config, int64_t dropoutSeed);

// The dropout mask's seed of one module of one layer, from a forward's seed.
int64_t loraModuleSeed(int64_t forwardSeed, int64_t layer, int64_t module);

// A fresh adapter as PEFT initialises it: A kaiming-uniform (a = sqrt(5), i.e. U(±1/sqrt(in))), B = 0.
LoraPair initialLoraPair(int64_t in, int64_t out, int64_t rank, at::Generator& generator);

// W + scale · B A in fp32, returned in W's dtype (a merged checkpoint).
at::Tensor mergeLora(const at::Tensor& weight, const LoraPair& lora, double scale);

}  // namespace octo
