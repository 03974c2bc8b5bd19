#include "core/bench_kernels.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/logprobs.h"
#include "core/memory_tracker.h"
#include "core/policy_loss.h"

#include <cerrno>
#include <optional>
#include <chrono>
#include <cmath>
#include <limits>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace octo {

namespace {
void synchronize(at::Device device) {
  // A tiny device-to-host copy waits for all queued kernels without needing CUDA headers.
  if (device.is_cuda()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}
}  // namespace

double timeMatmul(int64_t m, int64_t k, int64_t n, int64_t iterations, at::Device device, at::ScalarType dtype) {
  c10::InferenceMode inference;
  const auto options = at::TensorOptions().device(device).dtype(dtype);
  at::Tensor a = at::randn({m, k}, options), b = at::randn({k, n}, options);
  at::Tensor out = at::matmul(a, b);
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) at::matmul_out(out, a, b);
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / static_cast<double>(iterations);
}

LossBenchResult benchPolicyLoss(int64_t tokens, int64_t hidden, int64_t vocab, int64_t chunkSize, bool eager,
                                bool lmHeadGrad, int64_t iterations, at::Device device) {
  installCpuMemoryTracker();
  std::optional<StockCpuAllocation> stock;  // the eager formula allocates as stock libtorch does
  if (eager) stock.emplace();
  const auto options = at::TensorOptions().device(device).dtype(device.is_cuda() ? at::kBFloat16 : at::kFloat);
  at::Generator generator = at::detail::createCPUGenerator(0);
  at::Tensor h = at::randn({tokens, hidden}, generator).to(options).requires_grad_(true);
  at::Tensor w = (at::randn({vocab, hidden}, generator) * 0.02).to(options).requires_grad_(lmHeadGrad);
  at::Tensor targets = at::randint(vocab, {tokens}, generator).to(device);
  PolicyLossInputs in;
  in.oldLogprobs = (at::randn({tokens}, generator) * 0.1 - 12.0).to(device);
  in.refLogprobs = (at::randn({tokens}, generator) * 0.1 - 12.0).to(device);
  in.advantages = at::randn({tokens}, generator).to(device);
  in.lossMask = at::ones({tokens}, at::TensorOptions().device(device));
  in.klMask = in.lossMask;
  in.sequenceIds = at::div(at::arange(tokens, at::kLong), std::max<int64_t>(tokens / 8, 1), "floor").to(device);
  in.numSequences = in.sequenceIds.max().item<int64_t>() + 1;
  PolicyLossOptions lossOptions;
  lossOptions.klCoef = 0.01;
  LossNormalizers normalizers;
  normalizers.lossTokens = normalizers.klTokens = static_cast<double>(tokens);
  normalizers.sequences = static_cast<double>(in.numSequences);
  TokenLogprobsOptions lpOptions;
  lpOptions.chunkSize = chunkSize;

  LossBenchResult result;
  auto run = [&]() {
    h.mutable_grad() = at::Tensor();
    w.mutable_grad() = at::Tensor();
    TokenLogprobs lp = eager ? tokenLogprobsEager(h, w, targets, lpOptions) : tokenLogprobs(h, w, targets, lpOptions);
    in.logprobs = lp.logprobs;
    result.plan = lp.plan;
    at::Tensor loss = eager ? policyLossEager(in, lossOptions, normalizers) : policyLoss(in, lossOptions, normalizers).loss;
    loss.backward();
    in.logprobs = at::Tensor();
    result.loss = loss.item<double>();
  };
  run();  // warm-up (allocator caches, lazy init)
  synchronize(device);
  h.mutable_grad() = at::Tensor();
  w.mutable_grad() = at::Tensor();
  const int64_t before = deviceMemory(device, /*resetPeak=*/true).currentBytes;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) run();
  synchronize(device);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / static_cast<double>(iterations);
  result.peakBytes = deviceMemory(device, /*resetPeak=*/false).peakBytes - before;
  return result;
}

double timeFileRead(const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, "cannot open '", path, "'");
  struct stat st {};
  ::fstat(fd, &st);
  at::Tensor buffer = at::empty({static_cast<int64_t>(st.st_size)}, at::kByte);
  auto* dst = static_cast<char*>(buffer.data_ptr());
  int64_t done = 0;
  while (done < st.st_size) {
    const ssize_t n = ::pread(fd, dst + done, static_cast<size_t>(st.st_size - done), done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += n;
  }
  ::close(fd);
  TORCH_CHECK(done == st.st_size, "short read of '", path, "'");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// --- EagerModel ---

namespace {

// torch.finfo(dtype).min: what transformers fills masked attention scores with.
double lowestValue(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kDouble: return std::numeric_limits<double>::lowest();
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

// rotate_half: cat(-x2, x1) of the two halves of the last dimension.
at::Tensor rotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, x.size(-1) - half);
  return at::cat({-x2, x1}, -1);
}

// repeat_kv: [B, Hkv, S, D] -> [B, Hkv * groups, S, D] by expand + reshape (a copy when groups > 1).
at::Tensor repeatKv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  const int64_t B = x.size(0), Hkv = x.size(1), S = x.size(2), D = x.size(3);
  return x.unsqueeze(2).expand({B, Hkv, groups, S, D}).reshape({B, Hkv * groups, S, D});
}

// The eager 4-D mask of create_causal_mask: 0 where query t (absolute position past + t) may
// read key s (s <= past + t and attentionMask[b, s] set), finfo.min elsewhere: [B, 1, T, S].
at::Tensor causalMask(const at::Tensor& attentionMask, int64_t past, int64_t T, at::ScalarType dtype) {
  const int64_t S = attentionMask.size(1);
  const auto longs = at::TensorOptions().device(attentionMask.device()).dtype(at::kLong);
  at::Tensor cachePosition = at::arange(past, past + T, longs).unsqueeze(1);  // [T, 1]
  at::Tensor keyPosition = at::arange(S, longs).unsqueeze(0);                 // [1, S]
  at::Tensor allowed = (keyPosition <= cachePosition).unsqueeze(0).logical_and(attentionMask.ne(0).unsqueeze(1));  // [B, T, S]
  return at::zeros({attentionMask.size(0), 1, T, S}, attentionMask.options().dtype(dtype))
      .masked_fill(allowed.logical_not().unsqueeze(1), lowestValue(dtype));
}

}  // namespace

EagerModel::EagerModel(const DecoderModel& model)
    : spec_(model.spec()), device_(model.device()), dtype_(model.dtype()) {
  std::unordered_map<std::string, at::Tensor> byName;
  for (const auto& [name, tensor] : model.namedParameters()) {
    at::Tensor copy = tensor.detach().clone().requires_grad_(true);  // nn.Parameter: a leaf
    parameters_.push_back(copy);
    byName.emplace(name, copy);
    decays_.push_back(copy.dim() >= 2);  // Trainer's groups: no decay on norms and biases
  }
  auto get = [&](const std::string& name) { return byName.at(name); };
  embed_ = get("model.embed_tokens.weight");
  finalNorm_ = get("model.norm.weight");
  lmHead_ = spec_.tieWordEmbeddings ? embed_ : get("lm_head.weight");  // tie_weights: the same Parameter
  for (int64_t i = 0; i < spec_.numLayers; ++i) layers_.push_back(DecoderModel::Layer::fromNamed(spec_, i, get));
  invFreq_ = ropeInverseFrequencies(spec_).to(device_);  // the rotary embedding's inv_freq buffer
}

int64_t EagerModel::parameterCount() const {
  int64_t n = 0;
  for (const auto& p : parameters_) n += p.numel();
  return n;
}

// Qwen3RMSNorm.forward
at::Tensor EagerModel::rmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  at::Tensor hidden = x.to(at::kFloat);
  at::Tensor variance = hidden.pow(2).mean(-1, /*keepdim=*/true);
  hidden = hidden * at::rsqrt(variance + spec_.rmsNormEps);
  return weight * hidden.to(x.scalar_type());
}

// Qwen3MLP.forward: down_proj(act_fn(gate_proj(x)) * up_proj(x))
at::Tensor EagerModel::mlp(const DecoderModel::Layer& l, const at::Tensor& x) const {
  return at::linear(at::silu(at::linear(x, l.gate, l.gateBias)) * at::linear(x, l.up, l.upBias), l.down, l.downBias);
}

// Qwen3Attention.forward with eager_attention_forward.
at::Tensor EagerModel::attention(const DecoderModel::Layer& l, const at::Tensor& x, const at::Tensor& cos,
                                 const at::Tensor& sin, const at::Tensor& mask, EagerCache* cache,
                                 int64_t layerIndex) const {
  const int64_t B = x.size(0), T = x.size(1), D = spec_.headDim;
  const int64_t groups = spec_.numHeads / spec_.numKvHeads;
  at::Tensor query = at::linear(x, l.q, l.qBias).view({B, T, -1, D});  // [B, T, H, D]
  at::Tensor key = at::linear(x, l.k, l.kBias).view({B, T, -1, D});    // [B, T, Hkv, D]
  if (spec_.qkNorm) {
    query = rmsNorm(query, l.qNorm);
    key = rmsNorm(key, l.kNorm);
  }
  query = query.transpose(1, 2);                                                      // [B, H, T, D]
  key = key.transpose(1, 2);                                                          // [B, Hkv, T, D]
  at::Tensor value = at::linear(x, l.v, l.vBias).view({B, T, -1, D}).transpose(1, 2);  // [B, Hkv, T, D]
  // apply_rotary_pos_emb (cos, sin unsqueezed at dim 1)
  const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [B, 1, T, D]
  query = query * c + rotateHalf(query) * s;
  key = key * c + rotateHalf(key) * s;
  if (cache) {  // DynamicCache.update
    if (static_cast<int64_t>(cache->keys.size()) <= layerIndex) {
      cache->keys.push_back(key);
      cache->values.push_back(value);
    } else {
      cache->keys[layerIndex] = at::cat({cache->keys[layerIndex], key}, -2);
      cache->values[layerIndex] = at::cat({cache->values[layerIndex], value}, -2);
    }
    key = cache->keys[layerIndex];      // [B, Hkv, S, D]
    value = cache->values[layerIndex];
  }
  // eager_attention_forward
  at::Tensor keyStates = repeatKv(key, groups), valueStates = repeatKv(value, groups);  // [B, H, S, D]
  at::Tensor weights = at::matmul(query, keyStates.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(D)));
  weights = weights + mask.narrow(-1, 0, keyStates.size(-2));                       // [B, H, T, S]
  weights = at::softmax(weights, -1, at::kFloat).to(query.scalar_type());
  at::Tensor out = at::matmul(weights, valueStates).transpose(1, 2).contiguous();  // [B, T, H, D]
  return at::linear(out.reshape({B, T, -1}).contiguous(), l.o, l.oBias);
}

at::Tensor EagerModel::forward(const at::Tensor& inputIds, const at::Tensor& positionIds, const at::Tensor& attentionMask,
                               EagerCache* cache, int64_t logitsToKeep) const {
  const int64_t T = inputIds.size(1), past = cache ? cache->length() : 0;
  TORCH_CHECK(attentionMask.size(1) == past + T, "EagerModel.forward: the attention mask covers ", attentionMask.size(1),
              " keys, not ", past + T);
  at::Tensor hidden = at::embedding(embed_, inputIds);  // [B, T, C]
  // Qwen3RotaryEmbedding.forward: inv_freq [B, D/2, 1] @ positions [B, 1, T], in fp32
  at::Tensor invFreq = invFreq_.unsqueeze(0).unsqueeze(-1).expand({positionIds.size(0), -1, 1});
  at::Tensor freqs = at::matmul(invFreq, positionIds.unsqueeze(1).to(at::kFloat)).transpose(1, 2);  // [B, T, D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(hidden.scalar_type()), sin = emb.sin().to(hidden.scalar_type());  // [B, T, D]
  at::Tensor mask = causalMask(attentionMask, past, T, hidden.scalar_type());                      // [B, 1, T, S]
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {  // Qwen3DecoderLayer.forward
    const DecoderModel::Layer& l = layers_[i];
    at::Tensor residual = hidden;
    hidden = residual + attention(l, rmsNorm(hidden, l.inputNorm), cos, sin, mask, cache, i);
    residual = hidden;
    hidden = residual + mlp(l, rmsNorm(hidden, l.postAttentionNorm));
  }
  hidden = rmsNorm(hidden, finalNorm_);
  if (logitsToKeep > 0) hidden = hidden.narrow(1, T - logitsToKeep, logitsToKeep);
  return at::linear(hidden, lmHead_).to(at::kFloat);  // [B, T', V]
}

at::Tensor EagerModel::logits(const at::Tensor& inputIds) const {
  StockCpuAllocation stock;  // PyTorch's own allocator, not the engine's block cache
  at::NoGradGuard noGrad;
  const at::Tensor ids = inputIds.to(device_, at::kLong);
  const int64_t T = ids.size(1);
  at::Tensor positions = at::arange(T, ids.options()).unsqueeze(0);  // cache_position.unsqueeze(0)
  at::Tensor logits = forward(ids, positions, at::ones_like(ids), nullptr);
  synchronize(device_);
  return logits;
}

EagerStepResult EagerModel::trainStep(const EagerTrainBatch& batch, const PolicyLossOptions& lossOptions,
                                      const EagerOptimizerOptions& optimizer) {
  StockCpuAllocation stock;
  at::AutoGradMode enableGrad(true);
  const auto floats = at::TensorOptions().device(device_).dtype(at::kFloat);
  const at::Tensor ids = batch.inputIds.to(device_, at::kLong), attention = batch.attentionMask.to(device_, at::kLong);
  const int64_t B = ids.size(0), T = ids.size(1);
  TORCH_CHECK(T >= 2, "EagerModel.trainStep needs [B, T] token ids with T >= 2");
  auto predicted = [&](const at::Tensor& perToken) { return perToken.to(floats).narrow(1, 1, T - 1).reshape({-1}); };  // [B*(T-1)]

  at::Tensor logits = forward(ids, at::arange(T, ids.options()).unsqueeze(0), attention, nullptr);  // [B, T, V]
  // Token log-probs: log_softmax over the full (shifted) logits, then gather the targets.
  at::Tensor logprobs = at::log_softmax(logits.narrow(1, 0, T - 1), -1)
                            .gather(-1, ids.narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);  // [B, T-1]
  PolicyLossInputs in;
  in.logprobs = logprobs.reshape({-1});
  in.oldLogprobs = predicted(batch.oldLogprobs);
  if (batch.refLogprobs.defined()) in.refLogprobs = predicted(batch.refLogprobs);
  in.advantages = predicted(batch.advantages);
  in.lossMask = predicted(batch.lossMask);
  in.klMask = batch.klMask.defined() ? predicted(batch.klMask) : in.lossMask;
  in.sequenceIds = at::arange(B, ids.options()).unsqueeze(1).expand({B, T - 1}).reshape({-1});
  in.numSequences = B;
  LossNormalizers normalizers;
  normalizers.lossTokens = in.lossMask.sum().item<double>();
  normalizers.klTokens = (in.klMask > 0).sum().item<double>();
  normalizers.sequences = static_cast<double>(B);
  normalizers.maxLength = static_cast<double>(T);
  at::Tensor loss = policyLossEager(in, lossOptions, normalizers);
  loss.backward();
  EagerStepResult result;
  result.loss = loss.item<double>();
  clipAndStep(optimizer, result);
  synchronize(device_);
  return result;
}

void EagerModel::clipAndStep(const EagerOptimizerOptions& o, EagerStepResult& result) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> grads;
  for (const auto& p : parameters_)
    if (p.grad().defined()) grads.push_back(p.grad());
  // clip_grad_norm_: per-tensor norms (foreach), their norm, one clamped coefficient for all
  // (multiplied in even when it is 1, so no host sync).
  if (!grads.empty()) {
    at::Tensor total = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
    if (o.maxGradNorm > 0) {
      at::Tensor coefficient = (o.maxGradNorm / (total + 1e-6)).clamp_max(1.0);
      for (auto& g : grads) g.mul_(coefficient);
    }
    result.gradNorm = total.item<double>();
  }
  // AdamW.step, lazily initialised state. torch picks the for-each kernels on CUDA and the
  // per-tensor loop on CPU (_default_to_fused_or_foreach); the same here.
  if (expAvg_.empty()) {
    for (const auto& p : parameters_) {
      expAvg_.push_back(at::zeros_like(p));
      expAvgSq_.push_back(at::zeros_like(p));
    }
  }
  ++steps_;
  const double b1 = o.beta1, b2 = o.beta2;
  const double biasCorrection1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double biasCorrection2Sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(steps_)));
  const double stepSize = o.lr / biasCorrection1;
  std::vector<at::Tensor> params, paramGrads, m, v, decayed;
  std::vector<bool> paramDecays;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (!parameters_[i].grad().defined()) continue;  // no gradient: no update, as torch skips it
    params.push_back(parameters_[i]);
    paramGrads.push_back(parameters_[i].grad());
    m.push_back(expAvg_[i]);
    v.push_back(expAvgSq_[i]);
    paramDecays.push_back(decays_[i] && o.weightDecay != 0);
    if (paramDecays.back()) decayed.push_back(parameters_[i]);
  }
  if (device_.is_cpu()) {  // _single_tensor_adam
    for (size_t i = 0; i < params.size(); ++i) {
      if (paramDecays[i]) params[i].mul_(1.0 - o.lr * o.weightDecay);
      m[i].lerp_(paramGrads[i], 1.0 - b1);
      v[i].mul_(b2).addcmul_(paramGrads[i], paramGrads[i], 1.0 - b2);
      at::Tensor denominator = (v[i].sqrt() / biasCorrection2Sqrt).add_(o.eps);
      params[i].addcdiv_(m[i], denominator, -stepSize);
    }
  } else if (!params.empty()) {  // _multi_tensor_adam
    if (!decayed.empty()) at::_foreach_mul_(decayed, 1.0 - o.lr * o.weightDecay);
#if OCTO_TORCH_AT_LEAST(2, 0)
    at::_foreach_lerp_(m, paramGrads, 1.0 - b1);
#else
    at::_foreach_mul_(m, b1);
    at::_foreach_add_(m, paramGrads, 1.0 - b1);
#endif
    at::_foreach_mul_(v, b2);
    at::_foreach_addcmul_(v, paramGrads, paramGrads, 1.0 - b2);
    std::vector<at::Tensor> denominators = at::_foreach_sqrt(v);
    at::_foreach_div_(denominators, biasCorrection2Sqrt);
    at::_foreach_add_(denominators, o.eps);
    at::_foreach_addcdiv_(params, m, denominators, -stepSize);
  }
  for (auto& p : parameters_) p.mutable_grad() = at::Tensor();  // zero_grad(set_to_none=True)
}

at::Tensor EagerModel::generate(const at::Tensor& promptIds, const EagerSampling& sampling) const {
  StockCpuAllocation stock;
  at::NoGradGuard noGrad;  // generate runs under torch.no_grad()
  TORCH_CHECK(sampling.maxNewTokens >= 1, "EagerModel.generate: maxNewTokens must be at least 1");
  at::Tensor ids = promptIds.to(device_, at::kLong);  // [B, P], grows to [B, P + N]
  const int64_t B = ids.size(0), P = ids.size(1);
  const auto longs = ids.options();
  c10::optional<at::Generator> generator;
  if (device_.is_cpu()) generator = at::detail::createCPUGenerator(sampling.seed);
  const bool sample = sampling.temperature > 0;
  at::Tensor attention = at::ones({B, P}, longs);
  at::Tensor unfinished = at::ones({B}, longs);
  const int64_t padTokenId = 0;
  EagerCache cache;
  for (int64_t step = 0; step < sampling.maxNewTokens; ++step) {
    // prepare_inputs_for_generation: positions from the attention mask; after the prefill only
    // the newest token goes in.
    at::Tensor positions = (attention.cumsum(-1) - 1).masked_fill_(attention.eq(0), 1);
    at::Tensor input = ids;
    if (step > 0) {
      input = ids.narrow(1, ids.size(1) - 1, 1);
      positions = positions.narrow(1, positions.size(1) - 1, 1);
    }
    at::Tensor logits = forward(input, positions, attention, &cache, /*logitsToKeep=*/1);  // [B, 1, V]
    at::Tensor scores = logits.select(1, 0).to(at::kFloat).clone();                         // [B, V]
    at::Tensor next;
    if (!sample) {
      next = scores.argmax(-1);
    } else {
      if (sampling.temperature != 1.0) scores = scores / sampling.temperature;  // TemperatureLogitsWarper
      if (sampling.topP < 1.0) {                                                // TopPLogitsWarper
        auto [sortedLogits, sortedIndices] = at::sort(scores, -1, /*descending=*/false);
        at::Tensor cumulative = sortedLogits.softmax(-1).cumsum(-1);
        at::Tensor sortedRemove = cumulative <= (1.0 - sampling.topP);
        sortedRemove.narrow(-1, sortedRemove.size(-1) - 1, 1).fill_(false);  // min_tokens_to_keep = 1
        at::Tensor remove = sortedRemove.scatter(1, sortedIndices, sortedRemove);
        scores = scores.masked_fill(remove, -std::numeric_limits<float>::infinity());
      }
      at::Tensor probs = at::softmax(scores, -1);
      next = at::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(1);
    }
    next = next * unfinished + padTokenId * (1 - unfinished);
    ids = at::cat({ids, next.unsqueeze(1)}, -1);
    attention = at::cat({attention, at::ones({B, 1}, longs)}, -1);  // _update_model_kwargs_for_generation
    // Stopping criteria (max length only: no EOS), then the per-step "any row unfinished?" host read.
    if (step + 1 >= sampling.maxNewTokens) unfinished.zero_();
    if (unfinished.max().item<int64_t>() == 0) break;
  }
  return ids.narrow(1, P, ids.size(1) - P);
}

}  // namespace octo
