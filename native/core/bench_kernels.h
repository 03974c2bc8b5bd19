// Reference kernels timed by the benches as same-run baselines (bench/*.ts).
#pragma once

#include "core/logprobs.h"
#include "core/model.h"
#include "core/policy_loss.h"
#include "core/torch_prelude.h"

namespace octo {

// Seconds per [m, k] x [k, n] matmul in `dtype` on `device`, averaged over `iterations`
// after one warm-up: the GEMM rate that bounds a forward pass of the same shapes.
double timeMatmul(int64_t m, int64_t k, int64_t n, int64_t iterations, at::Device device, at::ScalarType dtype);

// Seconds to read all of `path` into newly allocated memory with pread: the floor for a
// checkpoint loader, which must also fault in fresh pages for the weights it returns.
double timeFileRead(const std::string& path);

struct LossBenchResult {
  double seconds = 0;        // forward + backward, mean over iterations
  int64_t peakBytes = -1;    // peak CPU bytes above what was held before (-1: not measured on this device)
  double loss = 0;
  LogprobsPlan plan;         // the fused op's plan (eager: a default one)
};

// Token log-probs + policy loss (+ backward) at [tokens x hidden] hidden states and a
// [vocab x hidden] LM head: the chunked, fused path or the eager formula on full logits.
// `lmHeadGrad` false keeps the LM head frozen, isolating the memory that scales with tokens.
// chunkSize 0: the fused op plans its chunks from its default memory budget.
LossBenchResult benchPolicyLoss(int64_t tokens, int64_t hidden, int64_t vocab, int64_t chunkSize, bool eager,
                                bool lmHeadGrad, int64_t iterations, at::Device device);

// --- The eager PyTorch baseline of `octo-native bench vs-eager` (bench/vs-eager-bench.ts) ---
//
// A DecoderModel computed the way transformers' modeling_qwen3.py (modeling_llama.py,
// modeling_qwen2.py) does with attn_implementation="eager", one ATen op per PyTorch op, nothing
// chunked or fused: RMSNorm x * rsqrt(mean(x²) + eps) * w in fp32; separate q/k/v projections;
// q/k norm (Qwen3); RoPE by rotate_half; GQA by repeat_kv (expand + reshape, a copy);
// matmul -> + additive causal mask -> softmax (fp32) -> matmul; SwiGLU MLP; lm_head over every
// position. Not in the product path: it only measures what the engine saves.
//
// Shape legend: B = rows, T = new tokens, S = cached + new keys, P = prompt tokens,
// N = new tokens generated, C = hidden, H / Hkv = query / key-value heads, D = head dim, V = vocab.

// transformers' DynamicCache: per layer, keys and values [B, Hkv, S, D] grown by at::cat each step.
struct EagerCache {
  std::vector<at::Tensor> keys, values;  // empty until the first forward fills them
  int64_t length() const { return keys.empty() ? 0 : keys[0].size(2); }
};

// One training batch, right-padded [B, T]; per-token entry t concerns token t (entry 0 is never trained).
struct EagerTrainBatch {
  at::Tensor inputIds;       // [B, T] int64
  at::Tensor attentionMask;  // [B, T] int64 0/1
  at::Tensor lossMask;       // [B, T] float
  at::Tensor klMask;         // [B, T] float (undefined: the loss mask)
  at::Tensor advantages;     // [B, T] float
  at::Tensor oldLogprobs;    // [B, T] float
  at::Tensor refLogprobs;    // [B, T] float (when klCoef != 0)
};

// torch.optim.AdamW (decay on >= 2-D weights, as transformers' Trainer groups them) and
// torch.nn.utils.clip_grad_norm_.
struct EagerOptimizerOptions {
  double lr = 1e-6;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01;
  double maxGradNorm = 1.0;  // 0: no clipping (the norm is still returned)
};

struct EagerStepResult {
  double loss = 0;
  double gradNorm = 0;  // before clipping
};

// transformers' generate(do_sample=temperature > 0, temperature, top_p, top_k=0).
struct EagerSampling {
  double temperature = 1.0;  // 0: greedy
  double topP = 1.0;
  int64_t maxNewTokens = 16;
  uint64_t seed = 0;  // torch.manual_seed (CPU); on CUDA the default generator, unseeded
};

class EagerModel {
 public:
  // Copies `model`'s weights (same values, same dtype and device) as leaf tensors that train.
  explicit EagerModel(const DecoderModel& model);

  // Qwen3ForCausalLM.forward: logits [B, T', V] (fp32) of ids [B, T] at positionIds [B, T];
  // attentionMask [B, S] (0/1) covers the cached keys and these; T' = T, or logitsToKeep > 0.
  at::Tensor forward(const at::Tensor& inputIds, const at::Tensor& positionIds, const at::Tensor& attentionMask,
                     EagerCache* cache, int64_t logitsToKeep = 0) const;
  // `with torch.no_grad(): model(input_ids).logits`: positions 0..T-1, no padding.
  at::Tensor logits(const at::Tensor& inputIds) const;
  // Forward, log_softmax over the full logits + gather, policyLossEager, backward,
  // clip_grad_norm_, AdamW step, zero_grad(set_to_none=True).
  EagerStepResult trainStep(const EagerTrainBatch& batch, const PolicyLossOptions& loss,
                            const EagerOptimizerOptions& optimizer);
  // GenerationMixin._sample over prompts [B, P] (no padding, no EOS): prefill with
  // logits_to_keep=1, then one token per step through the DynamicCache; -> new tokens [B, N].
  at::Tensor generate(const at::Tensor& promptIds, const EagerSampling& sampling) const;

  int64_t parameterCount() const;
  at::Device device() const { return device_; }

 private:
  at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor attention(const DecoderModel::Layer& layer, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& mask, EagerCache* cache, int64_t layerIndex) const;
  at::Tensor mlp(const DecoderModel::Layer& layer, const at::Tensor& x) const;
  void clipAndStep(const EagerOptimizerOptions& options, EagerStepResult& result);

  ModelSpec spec_;
  at::Device device_;
  at::ScalarType dtype_;
  std::vector<at::Tensor> parameters_;  // HF order, leaf tensors
  at::Tensor embed_, finalNorm_, lmHead_, invFreq_;
  std::vector<DecoderModel::Layer> layers_;
  std::vector<at::Tensor> expAvg_, expAvgSq_;  // AdamW state, allocated by the first step (as torch does)
  std::vector<bool> decays_;
  int64_t steps_ = 0;
};

}  // namespace octo
