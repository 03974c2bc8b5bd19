// Decoder-only transformer in the Hugging Face layout: Llama 3.x, Qwen2/2.5, Qwen3.
//
// Shape legend: B = batch, T = new tokens this call, S = cached + new keys,
// C = hidden size, H = query heads, Hkv = key/value heads, D = head dim, V = vocab, I = MLP width.
//
// Parameters are held under their Hugging Face names so load and save are name-for-name.
#pragma once

#include "core/kv_cache.h"
#include "core/lora.h"
#include "core/torch_prelude.h"

#include <functional>
#include <optional>

namespace octo {

// Everything the forward needs from config.json, already validated and defaulted by
// lib/engine/model-config.ts (the one place that reads Hugging Face configs).
struct ModelSpec {
  std::string architecture;     // "LlamaForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM"
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;
  double rmsNormEps = 1e-6;
  double ropeTheta = 10000.0;
  bool tieWordEmbeddings = false;
  bool attentionBias = false;   // bias on q/k/v (Qwen2: true)
  bool outputBias = false;      // bias on o_proj (Llama attention_bias=true sets both)
  bool mlpBias = false;
  bool qkNorm = false;          // per-head RMSNorm on q and k before RoPE (Qwen3)
  // rope_scaling: "default" | "linear" | "llama3"
  std::string ropeType = "default";
  double ropeFactor = 1.0;
  double ropeLowFreqFactor = 1.0;
  double ropeHighFreqFactor = 4.0;
  int64_t ropeOriginalMaxPositions = 8192;
};

struct ParameterInfo {
  std::string name;
  std::vector<int64_t> shape;
};

// The tensors a checkpoint of this spec must hold, in Hugging Face order.
std::vector<ParameterInfo> expectedParameters(const ModelSpec& spec);

// What sharded training (core/parameter_shards.h, fsdp) does around the parts of a forward that
// read weights: hiddenStates calls these while they are set (setForwardHooks), and only then.
class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  virtual void beforeEmbedding() {}
  virtual void afterEmbedding() {}
  virtual void beforeLayer(int64_t layer) {}
  // `out` is the layer's output; what is returned continues the forward (a hook may be registered on it).
  virtual at::Tensor afterLayer(int64_t layer, const at::Tensor& out) { return out; }
  virtual void beforeFinalNorm() {}
  // False: q, k and v run as three linears instead of one over their concatenation, whose
  // autograd would keep a copy of the weights alive until the backward.
  virtual bool fuseProjections() const { return true; }
};

class DecoderModel {
 public:
  // `weights` maps every name of expectedParameters(spec) to a tensor of that shape.
  DecoderModel(ModelSpec spec, std::unordered_map<std::string, at::Tensor> weights,
               at::Device device, at::ScalarType dtype);

  const ModelSpec& spec() const { return spec_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // A base parameter (Hugging Face name) or an adapter tensor (PEFT name).
  const at::Tensor& parameter(const std::string& name) const;
  // The base weights, Hugging Face order (what a full save writes).
  std::vector<std::pair<std::string, at::Tensor>> namedParameters() const;
  // The adapters' A and B tensors under their PEFT names, layer by layer (none without LoRA).
  const std::vector<std::pair<std::string, at::Tensor>>& adapterParameters() const { return adapters_; }
  // What a Trainer trains: the adapters under LoRA, else every base weight.
  std::vector<std::pair<std::string, at::Tensor>> trainableParameters() const;
  // Base weights and adapters (the latter absent on a view made by withoutAdapters()).
  int64_t parameterBytes() const;
  // How many NaN or ±Inf values each tensor holds, in namedParameters() then adapterParameters()
  // order (what save refuses and load warns about): one reduction per tensor and one host read,
  // then an exact count of the tensors that hold any.
  std::vector<int64_t> nonFiniteCounts() const;

  // LoRA (lora.h): puts an adapter on every targeted projection of every layer. `adapters` maps
  // each PEFT name to its tensor; an empty map initialises them as PEFT does (seeded by config.seed).
  // The base weights are frozen from then on. Once per model.
  void attachAdapters(const LoraConfig& config, std::unordered_map<std::string, at::Tensor> adapters);
  const LoraConfig* lora() const { return lora_ ? &*lora_ : nullptr; }
  // The same base weights (shared, not copied) with no adapters: the reference policy of a LoRA run.
  std::shared_ptr<DecoderModel> withoutAdapters() const;
  // True for a view made by withoutAdapters(): its weights belong to the model it was made from.
  bool sharesWeights() const { return sharesWeights_; }
  // The base parameter `name` with its adapter merged in (W + scale · B A, W's dtype); the parameter
  // itself where it has no adapter.
  at::Tensor mergedParameter(const std::string& name) const;

  // Final hidden states [B, T, C] for `inputIds` [B, T] at absolute `positions` [B, T].
  // With a cache (kv_cache.h), the new keys are appended after cache->length and attention covers the
  // cached prefix. `keyValid` [B, T] marks padding tokens (false) that no query may attend to.
  // With `checkpointLayers`, each decoder layer keeps only its input for backward and
  // recomputes the rest (training memory; docs/methods.md §2). Only meaningful without a cache.
  // `dropoutSeed` >= 0 turns LoRA's dropout on (a training forward), its masks drawn from that seed.
  at::Tensor hiddenStates(const at::Tensor& inputIds, const at::Tensor& positions, KVCache* cache,
                          const at::Tensor& keyValid = {}, bool checkpointLayers = false, int64_t dropoutSeed = -1) const;
  at::Tensor logits(const at::Tensor& hidden) const;  // [..., C] -> [..., V] (fp32)
  const at::Tensor& lmHead() const { return lmHead_; }  // [V, C] (the embedding when tied)

  // The trainable parameters (trainableParameters()) take gradients (and keep them in .grad) while
  // trainable; under LoRA the base weights never do.
  void setTrainable(bool trainable);
  // Sharded training's hooks (nullptr: none). The engine thread runs one call at a time, so a
  // trainer sets them for its own forward and clears them after.
  void setForwardHooks(ForwardHooks* hooks) const { hooks_ = hooks; }

  struct Layer {
    at::Tensor inputNorm, postAttentionNorm;
    at::Tensor q, k, v, o, qBias, kBias, vBias, oBias, qNorm, kNorm;
    at::Tensor gate, up, down, gateBias, upBias, downBias;
    LoraPair qLora, kLora, vLora, oLora, gateLora, upLora, downLora;  // adapters (lora.h), where attached
    std::vector<at::Tensor> tensors() const;  // the defined ones, adapters included
    LoraPair* loraOf(const std::string& module);  // the pair of a kLoraModules name
    // Layer `index` of `spec` from its Hugging Face-named tensors (`get` returns one by name).
    static Layer fromNamed(const ModelSpec& spec, int64_t index, const std::function<at::Tensor(const std::string&)>& get);
  };

  // One decoder layer: x [B, T, C] -> [B, T, C]. `attendable` [B, 1, T, S] marks the keys each
  // query may read; undefined means plain causal attention (SDPA's is_causal, flash-eligible),
  // which hiddenStates chooses for rows with no padding before a real token.
  at::Tensor layerForward(int64_t layerIndex, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                          KVCache* cache, const at::Tensor& attendable, int64_t dropoutSeed = -1) const;

 private:
  struct CheckpointedLayer;

  at::Tensor attention(const Layer& layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       KVCache* cache, int64_t layerIndex, const at::Tensor& attendable, int64_t dropoutSeed) const;
  at::Tensor mlp(const Layer& layer, const at::Tensor& x, int64_t layerIndex, int64_t dropoutSeed) const;
  // y plus the adapter of `module` (an index into kLoraModules) of layer `layerIndex`, if any.
  at::Tensor withLora(at::Tensor y, const at::Tensor& x, const LoraPair& lora, int64_t layerIndex, int64_t module,
                      int64_t dropoutSeed) const;
  at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight) const;

  ModelSpec spec_;
  at::Device device_;
  at::ScalarType dtype_;
  std::vector<std::pair<std::string, at::Tensor>> parameters_;  // HF order
  std::unordered_map<std::string, size_t> parameterIndex_;
  at::Tensor embed_, finalNorm_, lmHead_;
  std::vector<Layer> layers_;
  at::Tensor invFreq_;  // [D/2] fp32, rope scaling applied
  mutable ForwardHooks* hooks_ = nullptr;
  std::optional<LoraConfig> lora_;
  std::vector<std::pair<std::string, at::Tensor>> adapters_;  // PEFT names, layer by layer
  std::unordered_map<std::string, size_t> adapterIndex_;
  std::unordered_map<std::string, LoraPair> mergeTargets_;  // base weight name -> its adapter
  bool sharesWeights_ = false;
};

// Inverse RoPE frequencies [D/2] (fp32) as transformers computes them, rope_scaling applied.
at::Tensor ropeInverseFrequencies(const ModelSpec& spec);

// Random weights in the Hugging Face initialisation (normal(0, 0.02), norms at 1), for the
// built-in demo model and benches.
std::unordered_map<std::string, at::Tensor> initialParameters(const ModelSpec& spec, uint64_t seed);

}  // namespace octo
