#include "core/model.h"

#include "core/few_row_linear.h"

#include <ATen/CPUGeneratorImpl.h>
#include <cmath>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace octo {

namespace {

std::string layerPrefix(int64_t i) { return "model.layers." + std::to_string(i) + "."; }

at::Tensor rotateHalf(const at::Tensor& x) {  // [..., D] -> [-x2, x1]
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

// Inverse RoPE frequencies as transformers computes them (fp32), with rope_scaling applied.
at::Tensor ropeInverseFrequencies(const ModelSpec& spec) {
  const int64_t d = spec.headDim;
  at::Tensor exponents = at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<float>(d);
  at::Tensor invFreq = 1.0 / at::pow(static_cast<float>(spec.ropeTheta), exponents);  // [D/2]
  if (spec.ropeType == "linear") return invFreq / spec.ropeFactor;
  if (spec.ropeType != "llama3") return invFreq;
  // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between smoothed.
  const double oldContext = static_cast<double>(spec.ropeOriginalMaxPositions);
  const double lowFreqWavelength = oldContext / spec.ropeLowFreqFactor;
  const double highFreqWavelength = oldContext / spec.ropeHighFreqFactor;
  at::Tensor wavelength = 2.0 * M_PI / invFreq;
  at::Tensor scaled = at::where(wavelength > lowFreqWavelength, invFreq / spec.ropeFactor, invFreq);
  at::Tensor smooth = (oldContext / wavelength - spec.ropeLowFreqFactor) /
                      (spec.ropeHighFreqFactor - spec.ropeLowFreqFactor);
  at::Tensor smoothed = (1 - smooth) * scaled / spec.ropeFactor + smooth * scaled;
  at::Tensor isMedium = (wavelength >= highFreqWavelength).logical_and(wavelength <= lowFreqWavelength);
  return at::where(isMedium, smoothed, scaled);
}

namespace {

// True when no row has padding before a real token (right-padded or unpadded rows): one host
// read, skipped when there is no padding mask at all.
bool paddingOnlyAtEnds(const at::Tensor& valid, bool hasPadding) {
  const int64_t T = valid.size(1);
  if (!hasPadding || T < 2) return true;
  return !valid.narrow(1, 1, T - 1).logical_and(valid.narrow(1, 0, T - 1).logical_not()).any().item<bool>();
}

}  // namespace

// Activation checkpointing of one decoder layer: forward keeps only the layer's input;
// backward recomputes the layer with autograd on and differentiates it. libtorch's C++ API
// has no torch.utils.checkpoint, hence this Function.
struct DecoderModel::CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, const at::Tensor& attendable, at::TensorList weights,
                            const DecoderModel* model, int64_t layerIndex, int64_t dropoutSeed) {
    ctx->save_for_backward({x, cos, sin, attendable});
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(model);
    ctx->saved_data["layer"] = layerIndex;
    ctx->saved_data["dropout"] = dropoutSeed;  // the recompute draws the same LoRA dropout masks
    return model->layerForward(layerIndex, x, cos, sin, nullptr, maskOrCausal(attendable), dropoutSeed);
  }

  // A Function's tensor inputs must be defined, so plain causal attention travels as an empty mask.
  static at::Tensor maskOrCausal(const at::Tensor& attendable) { return attendable.numel() == 0 ? at::Tensor() : attendable; }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list gradOutputs) {
    auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const DecoderModel*>(ctx->saved_data["model"].toInt());
    const int64_t layerIndex = ctx->saved_data["layer"].toInt();
    const int64_t dropoutSeed = ctx->saved_data["dropout"].toInt();
    const std::vector<at::Tensor> weights = model->layers_[layerIndex].tensors();
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      out = model->layerForward(layerIndex, x, saved[1], saved[2], nullptr, maskOrCausal(saved[3]), dropoutSeed);
    }
    // Only what trains is differentiated (under LoRA, the adapters: the frozen base takes no gradient).
    std::vector<at::Tensor> inputs{x};
    std::vector<size_t> trained;
    for (size_t i = 0; i < weights.size(); ++i)
      if (weights[i].requires_grad()) {
        inputs.push_back(weights[i]);
        trained.push_back(i);
      }
    auto grads = torch::autograd::grad({out}, inputs, {gradOutputs[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    torch::autograd::variable_list result{grads[0], at::Tensor(), at::Tensor(), at::Tensor()};
    std::vector<at::Tensor> weightGrads(weights.size());
    for (size_t j = 0; j < trained.size(); ++j) weightGrads[trained[j]] = grads[j + 1];
    for (auto& g : weightGrads) result.push_back(g);
    result.push_back(at::Tensor());  // model
    result.push_back(at::Tensor());  // layerIndex
    result.push_back(at::Tensor());  // dropoutSeed
    return result;
  }
};

std::vector<ParameterInfo> expectedParameters(const ModelSpec& s) {
  const int64_t C = s.hiddenSize, D = s.headDim, q = s.numHeads * D, kv = s.numKvHeads * D;
  std::vector<ParameterInfo> out;
  out.push_back({"model.embed_tokens.weight", {s.vocabSize, C}});
  for (int64_t i = 0; i < s.numLayers; ++i) {
    const std::string p = layerPrefix(i);
    out.push_back({p + "input_layernorm.weight", {C}});
    out.push_back({p + "self_attn.q_proj.weight", {q, C}});
    if (s.attentionBias) out.push_back({p + "self_attn.q_proj.bias", {q}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, C}});
    if (s.attentionBias) out.push_back({p + "self_attn.k_proj.bias", {kv}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, C}});
    if (s.attentionBias) out.push_back({p + "self_attn.v_proj.bias", {kv}});
    out.push_back({p + "self_attn.o_proj.weight", {C, q}});
    if (s.outputBias) out.push_back({p + "self_attn.o_proj.bias", {C}});
    if (s.qkNorm) {
      out.push_back({p + "self_attn.q_norm.weight", {D}});
      out.push_back({p + "self_attn.k_norm.weight", {D}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {C}});
    out.push_back({p + "mlp.gate_proj.weight", {s.intermediateSize, C}});
    if (s.mlpBias) out.push_back({p + "mlp.gate_proj.bias", {s.intermediateSize}});
    out.push_back({p + "mlp.up_proj.weight", {s.intermediateSize, C}});
    if (s.mlpBias) out.push_back({p + "mlp.up_proj.bias", {s.intermediateSize}});
    out.push_back({p + "mlp.down_proj.weight", {C, s.intermediateSize}});
    if (s.mlpBias) out.push_back({p + "mlp.down_proj.bias", {C}});
  }
  out.push_back({"model.norm.weight", {C}});
  if (!s.tieWordEmbeddings) out.push_back({"lm_head.weight", {s.vocabSize, C}});
  return out;
}

std::unordered_map<std::string, at::Tensor> initialParameters(const ModelSpec& spec, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::unordered_map<std::string, at::Tensor> weights;
  for (const auto& p : expectedParameters(spec)) {
    const bool isNorm = p.name.find("norm.weight") != std::string::npos;
    const bool isBias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    at::Tensor t = isNorm ? at::ones(p.shape) : isBias ? at::zeros(p.shape) : at::empty(p.shape).normal_(0.0, 0.02, generator);
    weights.emplace(p.name, t);
  }
  return weights;
}

DecoderModel::DecoderModel(ModelSpec spec, std::unordered_map<std::string, at::Tensor> weights, at::Device device,
                           at::ScalarType dtype)
    : spec_(std::move(spec)), device_(device), dtype_(dtype) {
  TORCH_CHECK(spec_.numHeads % spec_.numKvHeads == 0, "num_attention_heads (", spec_.numHeads,
              ") must be a multiple of num_key_value_heads (", spec_.numKvHeads, ")");
  for (const auto& p : expectedParameters(spec_)) {
    auto it = weights.find(p.name);
    TORCH_CHECK(it != weights.end(), "missing parameter '", p.name, "'");
    TORCH_CHECK(it->second.sizes() == at::IntArrayRef(p.shape), "parameter '", p.name, "' has shape ",
                it->second.sizes(), " but the config needs ", at::IntArrayRef(p.shape));
    parameterIndex_[p.name] = parameters_.size();
    parameters_.emplace_back(p.name, it->second.to(device_, dtype_).contiguous());
  }
  auto get = [&](const std::string& name) { return parameters_[parameterIndex_.at(name)].second; };
  embed_ = get("model.embed_tokens.weight");
  finalNorm_ = get("model.norm.weight");
  lmHead_ = spec_.tieWordEmbeddings ? embed_ : get("lm_head.weight");
  for (int64_t i = 0; i < spec_.numLayers; ++i) layers_.push_back(Layer::fromNamed(spec_, i, get));
  invFreq_ = ropeInverseFrequencies(spec_).to(device_);
}

const at::Tensor& DecoderModel::parameter(const std::string& name) const {
  auto it = parameterIndex_.find(name);
  if (it != parameterIndex_.end()) return parameters_[it->second].second;
  auto adapter = adapterIndex_.find(name);
  TORCH_CHECK(adapter != adapterIndex_.end(), "no parameter named '", name, "'");
  return adapters_[adapter->second].second;
}

std::vector<std::pair<std::string, at::Tensor>> DecoderModel::namedParameters() const { return parameters_; }

std::vector<std::pair<std::string, at::Tensor>> DecoderModel::trainableParameters() const {
  return lora_ ? adapters_ : parameters_;
}

int64_t DecoderModel::parameterBytes() const {
  int64_t bytes = 0;
  for (const auto* list : {&parameters_, &adapters_})
    for (const auto& [name, t] : *list) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

void DecoderModel::attachAdapters(const LoraConfig& config, std::unordered_map<std::string, at::Tensor> adapters) {
  TORCH_CHECK(!lora_, "this model already has LoRA adapters");
  checkLoraConfig(config);
  at::NoGradGuard noGrad;
  const bool initialise = adapters.empty();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(config.seed);
  std::vector<std::pair<std::string, at::Tensor>> attached;
  for (int64_t i = 0; i < spec_.numLayers; ++i) {
    Layer& layer = layers_[i];
    for (const char* module : kLoraModules) {
      if (!config.targets(module)) continue;
      const std::string projection = projectionName(i, module);
      const at::Tensor& weight = parameter(projection + ".weight");  // [out, in]
      const int64_t out = weight.size(0), in = weight.size(1);
      LoraPair pair;
      const std::string nameA = loraTensorName(i, module, 'A'), nameB = loraTensorName(i, module, 'B');
      if (initialise) {
        pair = initialLoraPair(in, out, config.rank, generator);
      } else {
        for (const auto* name : {&nameA, &nameB}) {
          auto it = adapters.find(*name);
          TORCH_CHECK(it != adapters.end(), "the adapter has no tensor '", *name, "' (lora targets ", module, ")");
        }
        pair = {adapters.at(nameA), adapters.at(nameB)};
        TORCH_CHECK(pair.A.sizes() == at::IntArrayRef({config.rank, in}), "adapter tensor '", nameA, "' has shape ",
                    pair.A.sizes(), " but rank ", config.rank, " on ", projection, " needs [", config.rank, ", ", in, "]");
        TORCH_CHECK(pair.B.sizes() == at::IntArrayRef({out, config.rank}), "adapter tensor '", nameB, "' has shape ",
                    pair.B.sizes(), " but rank ", config.rank, " on ", projection, " needs [", out, ", ", config.rank, "]");
        adapters.erase(nameA);
        adapters.erase(nameB);
      }
      pair.A = pair.A.to(device_, dtype_).contiguous();
      pair.B = pair.B.to(device_, dtype_).contiguous();
      *layer.loraOf(module) = pair;
      mergeTargets_[projection + ".weight"] = pair;
      attached.emplace_back(nameA, pair.A);
      attached.emplace_back(nameB, pair.B);
    }
  }
  TORCH_CHECK(adapters.empty(), "the adapter holds tensor '", adapters.empty() ? "" : adapters.begin()->first,
              "', which the LoRA config's target modules and this model's layers do not have");
  for (auto& [name, tensor] : parameters_) tensor.requires_grad_(false);  // frozen for good
  adapters_ = std::move(attached);
  for (size_t i = 0; i < adapters_.size(); ++i) adapterIndex_[adapters_[i].first] = i;
  lora_ = config;
}

std::shared_ptr<DecoderModel> DecoderModel::withoutAdapters() const {
  auto view = std::make_shared<DecoderModel>(*this);  // tensor handles: the same storage
  view->lora_.reset();
  view->adapters_.clear();
  view->adapterIndex_.clear();
  view->mergeTargets_.clear();
  for (Layer& l : view->layers_)
    for (const char* module : kLoraModules) *l.loraOf(module) = LoraPair{};
  view->sharesWeights_ = true;
  return view;
}

at::Tensor DecoderModel::mergedParameter(const std::string& name) const {
  auto it = mergeTargets_.find(name);
  return it == mergeTargets_.end() ? parameter(name) : mergeLora(parameter(name), it->second, lora_->scale());
}

std::vector<int64_t> DecoderModel::nonFiniteCounts() const {
  at::NoGradGuard noGrad;
  // A sum is NaN or Inf when a value summed is, and otherwise only if it overflows: one reduction
  // per parameter, no temporaries, finds the tensors to count exactly (none, in a healthy model).
  std::vector<at::Tensor> tensors, sums;
  for (const auto* list : {&parameters_, &adapters_})
    for (const auto& [name, t] : *list) tensors.push_back(t);
  for (const auto& t : tensors) sums.push_back(t.sum(at::kFloat));
  const at::Tensor suspect = at::stack(sums).isfinite().logical_not().cpu();
  constexpr int64_t kChunkElements = int64_t{1} << 24;  // bounds isfinite's temporaries (a few bytes per element)
  std::vector<int64_t> counts(tensors.size(), 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!suspect[i].item<bool>()) continue;
    const at::Tensor flat = tensors[i].reshape({-1});
    for (int64_t start = 0; start < flat.numel(); start += kChunkElements)
      counts[i] += at::isfinite(flat.narrow(0, start, std::min(kChunkElements, flat.numel() - start))).logical_not().sum().item<int64_t>();
  }
  return counts;
}

at::Tensor DecoderModel::rmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // Normalise in fp32 whatever the activation dtype, as transformers does.
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + spec_.rmsNormEps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor DecoderModel::withLora(at::Tensor y, const at::Tensor& x, const LoraPair& lora, int64_t layerIndex,
                                  int64_t module, int64_t dropoutSeed) const {
  if (!lora.defined()) return y;
  return addLora(std::move(y), x, lora, *lora_, dropoutSeed < 0 ? -1 : loraModuleSeed(dropoutSeed, layerIndex, module));
}

at::Tensor DecoderModel::mlp(const Layer& l, const at::Tensor& x, int64_t i, int64_t seed) const {
  at::Tensor gate = withLora(octo::linear(x, l.gate, l.gateBias), x, l.gateLora, i, 4, seed);
  at::Tensor up = withLora(octo::linear(x, l.up, l.upBias), x, l.upLora, i, 5, seed);
  // Without autograd the activation and the product run in place: no [tokens, intermediate]
  // temporaries (same kernels, so the same values as the out-of-place form).
  at::Tensor activated = at::GradMode::is_enabled() ? at::silu(gate) * up : at::silu_(gate).mul_(up);
  return withLora(octo::linear(activated, l.down, l.downBias), activated, l.downLora, i, 6, seed);
}

at::Tensor DecoderModel::attention(const Layer& l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                   KVCache* cache, int64_t layerIndex, const at::Tensor& attendable, int64_t seed) const {
  const int64_t B = x.size(0), T = x.size(1), H = spec_.numHeads, Hkv = spec_.numKvHeads, D = spec_.headDim;
  at::Tensor q, k, v;
  if (fewRowLinearApplies(x, l.q) || (hooks_ && !hooks_->fuseProjections() && at::GradMode::is_enabled())) {
    // Decode-sized rows (fewRowLinear), or sharded training's unfused projections (ForwardHooks).
    q = octo::linear(x, l.q, l.qBias), k = octo::linear(x, l.k, l.kBias), v = octo::linear(x, l.v, l.vBias);
  } else {
    // One GEMM for the three projections: one wide output keeps BLAS busier than three narrow
    // ones. The weights are concatenated per call (differentiable: the backward splits the
    // gradient), so they never go stale while the optimizer updates q, k and v.
    const at::Tensor weight = at::cat({l.q, l.k, l.v});
    const at::Tensor bias = l.qBias.defined() ? at::cat({l.qBias, l.kBias, l.vBias}) : at::Tensor();
    const at::Tensor qkv = at::linear(x, weight, bias);
    q = qkv.narrow(-1, 0, H * D), k = qkv.narrow(-1, H * D, Hkv * D), v = qkv.narrow(-1, (H + Hkv) * D, Hkv * D);
  }
  // The adapters stay one per Hugging Face module (PEFT's layout), whichever way q, k, v were computed.
  q = withLora(q, x, l.qLora, layerIndex, 0, seed);
  k = withLora(k, x, l.kLora, layerIndex, 1, seed);
  v = withLora(v, x, l.vLora, layerIndex, 2, seed);
  q = q.view({B, T, H, D});
  k = k.view({B, T, Hkv, D});
  v = v.view({B, T, Hkv, D}).transpose(1, 2);  // [B, Hkv, T, D]
  if (spec_.qkNorm) {
    q = rmsNorm(q, l.qNorm);
    k = rmsNorm(k, l.kNorm);
  }
  q = q.transpose(1, 2);  // [B, H, T, D]
  k = k.transpose(1, 2);  // [B, Hkv, T, D]
  q = q * cos + rotateHalf(q) * sin;
  k = k * cos + rotateHalf(k) * sin;
  if (cache) std::tie(k, v) = cache->append(layerIndex, k, v);  // [B, Hkv, S, D]
  const int64_t S = k.size(2), groups = H / Hkv;
  at::Tensor out;  // [B, H, T, D]
#if OCTO_HAS_SDPA
  if (!attendable.defined()) {
    // Causal with no padding before a real token (hiddenStates decided): no mask, so SDPA may
    // take its flash kernel. Query head h reads key/value head h / groups (transformers' repeat_kv).
#if OCTO_HAS_SDPA_GQA
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/groups > 1);
#else
    if (groups > 1) {
      k = k.unsqueeze(2).expand({B, Hkv, groups, S, D}).reshape({B, H, S, D});
      v = v.unsqueeze(2).expand({B, Hkv, groups, S, D}).reshape({B, H, S, D});
    }
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#endif
  } else if (groups > 1 && T == 1) {
    // Decode: each key/value head's query group folded into the query dimension, so the cached
    // K/V stay [B, Hkv, S, D] instead of being copied out per query head every layer and step.
    // The mask [B, 1, 1, S] broadcasts over the folded queries.
    at::Tensor folded = q.reshape({B, Hkv, groups, D});
    out = at::scaled_dot_product_attention(folded, k, v, attendable, 0.0, false).reshape({B, H, 1, D});
  } else {
#if OCTO_HAS_SDPA_GQA
    out = at::scaled_dot_product_attention(q, k, v, attendable, 0.0, false, std::nullopt, /*enable_gqa=*/groups > 1);
#else
    if (groups > 1) {
      k = k.unsqueeze(2).expand({B, Hkv, groups, S, D}).reshape({B, H, S, D});
      v = v.unsqueeze(2).expand({B, Hkv, groups, S, D}).reshape({B, H, S, D});
    }
    out = at::scaled_dot_product_attention(q, k, v, attendable, 0.0, false);
#endif
  }
#else
  // Query head h reads key/value head h / groups (transformers' repeat_kv), done by broadcasting.
  // The 1/sqrt(D) scale on the queries ([.., T, D]) rather than the scores ([.., T, S]), and the
  // mask written into the scores in place: two fewer passes over the largest tensor of the layer.
  at::Tensor qGrouped = (q * (1.0 / std::sqrt(static_cast<double>(D)))).view({B, Hkv, groups, T, D});
  at::Tensor scores = at::matmul(qGrouped, k.unsqueeze(2).transpose(-1, -2));
  scores.masked_fill_(attendable.unsqueeze(1).logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());  // [B, Hkv, groups, T, S]
  out = at::matmul(probs, v.unsqueeze(2)).view({B, H, T, D});
#endif
  const at::Tensor attended = out.transpose(1, 2).reshape({B, T, H * D});
  return withLora(octo::linear(attended, l.o, l.oBias), attended, l.oLora, layerIndex, 3, seed);
}

at::Tensor DecoderModel::hiddenStates(const at::Tensor& inputIds, const at::Tensor& positions, KVCache* cache,
                                      const at::Tensor& keyValid, bool checkpointLayers, int64_t dropoutSeed) const {
  TORCH_CHECK(inputIds.dim() == 2 && positions.sizes() == inputIds.sizes(), "inputIds and positions must both be [B, T]");
  const int64_t B = inputIds.size(0), T = inputIds.size(1);
  const int64_t past = cache ? cache->length : 0, S = past + T;
  const bool staticShapes = cache && cache->writeSlot.defined();
  TORCH_CHECK(!cache || staticShapes || S <= cache->maxLength, "KV cache overflow: ", S, " tokens for a cache of ",
              cache->maxLength);
  const auto onDevice = at::TensorOptions().device(device_);

  // Which keys each query may read: earlier-or-same slot and not padding. A query always
  // reads itself, so padding rows stay finite (nothing reads them back).
  at::Tensor valid = keyValid.defined() ? keyValid.to(device_, at::kBool) : at::ones({B, T}, onDevice.dtype(at::kBool));
  at::Tensor attendable;  // [B, 1, T, S]; undefined: plain causal attention (SDPA's is_causal)
  if (!cache && OCTO_HAS_SDPA && paddingOnlyAtEnds(valid, keyValid.defined())) {
    // Every real token's earlier keys are all real, so the causal mask alone is exact for them;
    // a padding query then reads earlier padding too, and stays finite (nothing reads it back).
  } else if (staticShapes) {
    // Slots are written in order, so every valid slot is at or before the one written now.
    TORCH_CHECK(T == 1, "static-shape decode takes one token per row, not ", T);
    at::Tensor allValid = cache->appendValid(valid);                                            // [B, maxLength]
    at::Tensor keySlot = at::arange(cache->maxLength, onDevice.dtype(at::kLong)).unsqueeze(0);  // [1, maxLength]
    attendable = allValid.logical_or(keySlot == cache->writeSlot).unsqueeze(1).unsqueeze(1);
  } else {
    at::Tensor allValid = cache ? cache->appendValid(valid) : valid;  // [B, S]
    at::Tensor querySlot = at::arange(past, S, onDevice.dtype(at::kLong)).unsqueeze(1);  // [T, 1]
    at::Tensor keySlot = at::arange(0, S, onDevice.dtype(at::kLong)).unsqueeze(0);       // [1, S]
    attendable = (keySlot <= querySlot).unsqueeze(0).logical_and(allValid.unsqueeze(1))
                     .logical_or(keySlot == querySlot)
                     .unsqueeze(1);
  }

  at::Tensor freqs = positions.to(device_, at::kFloat).unsqueeze(-1) * invFreq_;  // [B, T, D/2]
  at::Tensor angles = at::cat({freqs, freqs}, -1);                                  // [B, T, D]
  at::Tensor cos = angles.cos().to(dtype_).unsqueeze(1);                            // [B, 1, T, D]
  at::Tensor sin = angles.sin().to(dtype_).unsqueeze(1);

  if (hooks_) hooks_->beforeEmbedding();
  at::Tensor x = at::embedding(embed_, inputIds.to(device_, at::kLong));  // [B, T, C]
  if (hooks_) hooks_->afterEmbedding();
  const bool checkpoint = checkpointLayers && !cache && at::GradMode::is_enabled();
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {
    if (hooks_) hooks_->beforeLayer(i);
    if (checkpoint) {
      const std::vector<at::Tensor> weights = layers_[i].tensors();
      const at::Tensor mask = attendable.defined() ? attendable : at::empty({0}, onDevice.dtype(at::kBool));
      x = CheckpointedLayer::apply(x, cos, sin, mask, at::TensorList(weights), this, i, dropoutSeed);
    } else {
      x = layerForward(i, x, cos, sin, cache, attendable, dropoutSeed);
    }
    if (hooks_) x = hooks_->afterLayer(i, x);
  }
  if (cache) cache->advance(T);
  if (hooks_) hooks_->beforeFinalNorm();
  return rmsNorm(x, finalNorm_);
}

at::Tensor DecoderModel::layerForward(int64_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                      KVCache* cache, const at::Tensor& attendable, int64_t dropoutSeed) const {
  const Layer& l = layers_[i];
  at::Tensor h = x + attention(l, rmsNorm(x, l.inputNorm), cos, sin, cache, i, attendable, dropoutSeed);
  return h + mlp(l, rmsNorm(h, l.postAttentionNorm), i, dropoutSeed);
}

DecoderModel::Layer DecoderModel::Layer::fromNamed(const ModelSpec& spec, int64_t index,
                                                   const std::function<at::Tensor(const std::string&)>& get) {
  auto getIf = [&](bool present, const std::string& name) { return present ? get(name) : at::Tensor(); };
  const std::string p = layerPrefix(index);
  Layer l;
  l.inputNorm = get(p + "input_layernorm.weight");
  l.postAttentionNorm = get(p + "post_attention_layernorm.weight");
  l.q = get(p + "self_attn.q_proj.weight");
  l.k = get(p + "self_attn.k_proj.weight");
  l.v = get(p + "self_attn.v_proj.weight");
  l.o = get(p + "self_attn.o_proj.weight");
  l.qBias = getIf(spec.attentionBias, p + "self_attn.q_proj.bias");
  l.kBias = getIf(spec.attentionBias, p + "self_attn.k_proj.bias");
  l.vBias = getIf(spec.attentionBias, p + "self_attn.v_proj.bias");
  l.oBias = getIf(spec.outputBias, p + "self_attn.o_proj.bias");
  l.qNorm = getIf(spec.qkNorm, p + "self_attn.q_norm.weight");
  l.kNorm = getIf(spec.qkNorm, p + "self_attn.k_norm.weight");
  l.gate = get(p + "mlp.gate_proj.weight");
  l.up = get(p + "mlp.up_proj.weight");
  l.down = get(p + "mlp.down_proj.weight");
  l.gateBias = getIf(spec.mlpBias, p + "mlp.gate_proj.bias");
  l.upBias = getIf(spec.mlpBias, p + "mlp.up_proj.bias");
  l.downBias = getIf(spec.mlpBias, p + "mlp.down_proj.bias");
  return l;
}

std::vector<at::Tensor> DecoderModel::Layer::tensors() const {
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&inputNorm, &postAttentionNorm, &q, &k, &v, &o, &qBias, &kBias, &vBias, &oBias, &qNorm,
                              &kNorm, &gate, &up, &down, &gateBias, &upBias, &downBias})
    if (t->defined()) out.push_back(*t);
  for (const LoraPair* p : {&qLora, &kLora, &vLora, &oLora, &gateLora, &upLora, &downLora})
    if (p->defined()) out.insert(out.end(), {p->A, p->B});
  return out;
}

LoraPair* DecoderModel::Layer::loraOf(const std::string& module) {
  if (module == "q_proj") return &qLora;
  if (module == "k_proj") return &kLora;
  if (module == "v_proj") return &vLora;
  if (module == "o_proj") return &oLora;
  if (module == "gate_proj") return &gateLora;
  if (module == "up_proj") return &upLora;
  TORCH_CHECK(module == "down_proj", "no projection named '", module, "'");
  return &downLora;
}

void DecoderModel::setTrainable(bool trainable) {
  for (auto& [name, tensor] : trainableParameters()) tensor.requires_grad_(trainable);
}

at::Tensor DecoderModel::logits(const at::Tensor& hidden) const { return octo::linear(hidden, lmHead_).to(at::kFloat); }

}  // namespace octo
