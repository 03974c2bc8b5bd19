#include "core/logprobs.h"

#include <torch/csrc/autograd/custom_function.h>

#include "core/model.h"

namespace octo {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Scaled logits of one chunk in fp32: [n, V] (a fresh tensor: callers may modify it in place).
at::Tensor chunkLogits(const at::Tensor& hidden, const at::Tensor& lmHead, double temperature) {
  at::Tensor logits = at::matmul(hidden, lmHead.t());
  if (logits.scalar_type() != at::kFloat) logits = logits.to(at::kFloat);
  return temperature == 1.0 ? logits : logits.div_(temperature);
}

// Row-wise dot product of two [n, V] tensors without an [n, V] temporary.
at::Tensor rowDot(const at::Tensor& a, const at::Tensor& b) {
  return at::bmm(a.unsqueeze(1), b.unsqueeze(2)).view({a.size(0)});
}

// Memory: at most two [chunk, V] fp32 buffers are alive at a time, in forward and backward.
struct ChunkedLogprobs : public torch::autograd::Function<ChunkedLogprobs> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& lmHead,
                               const at::Tensor& targets, double temperature, int64_t chunkSize, bool withEntropy) {
    const int64_t N = hidden.size(0);
    at::Tensor logprobs = at::empty({N}, hidden.options().dtype(at::kFloat));
    at::Tensor entropy = withEntropy ? at::empty({N}, logprobs.options()) : at::zeros({0}, logprobs.options());
    at::Tensor logNormalizers = at::empty({N}, logprobs.options());  // logsumexp per token, reused in backward
    for (int64_t start = 0; start < N; start += chunkSize) {
      const int64_t n = std::min(chunkSize, N - start);
      at::Tensor logits = chunkLogits(hidden.narrow(0, start, n), lmHead, temperature);  // [n, V]
      at::Tensor lse = at::logsumexp(logits, -1);                                         // [n]
      logNormalizers.narrow(0, start, n).copy_(lse);
      logprobs.narrow(0, start, n).copy_(logits.gather(1, targets.narrow(0, start, n).unsqueeze(1)).squeeze(1) - lse);
      if (withEntropy) {
        // H = lse - sum_j p_j z_j
        at::Tensor probs = (logits - lse.unsqueeze(1)).exp_();
        entropy.narrow(0, start, n).copy_(lse - rowDot(probs, logits));
      }
    }
    ctx->save_for_backward({hidden, lmHead, targets, logNormalizers, entropy});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunkSize"] = chunkSize;
    ctx->saved_data["withEntropy"] = withEntropy;
    return {logprobs, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &lmHead = saved[1], &targets = saved[2], &logNormalizers = saved[3],
                     &entropy = saved[4];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunkSize = ctx->saved_data["chunkSize"].toInt();
    const bool withEntropy = ctx->saved_data["withEntropy"].toBool();
    const at::Tensor& gradLogprobs = gradOutputs[0];  // [N]
    const at::Tensor& gradEntropy = gradOutputs[1];   // [N] or undefined
    const bool useEntropyGrad = withEntropy && gradEntropy.defined();
    const bool needHidden = ctx->needs_input_grad(0), needWeight = ctx->needs_input_grad(1);

    const int64_t N = hidden.size(0);
    at::Tensor gradHidden = needHidden ? at::empty_like(hidden) : at::Tensor();
    at::Tensor gradWeight = needWeight ? at::zeros(lmHead.sizes(), lmHead.options().dtype(at::kFloat)) : at::Tensor();
    for (int64_t start = 0; start < N && (needHidden || needWeight); start += chunkSize) {
      const int64_t n = std::min(chunkSize, N - start);
      at::Tensor h = hidden.narrow(0, start, n);
      // Recomputed, then turned in place into log p: [n, V].
      at::Tensor logp = chunkLogits(h, lmHead, temperature).sub_(logNormalizers.narrow(0, start, n).unsqueeze(1));
      at::Tensor gradLogits = at::exp(logp);  // p, then d loss / d z in place
      at::Tensor g = gradLogprobs.defined() ? gradLogprobs.narrow(0, start, n).unsqueeze(1)
                                            : at::zeros({n, 1}, gradLogits.options());
      if (useEntropyGrad) {
        // d H / d z_k = -p_k (log p_k + H); logp is not needed afterwards, so it holds the term.
        at::Tensor gh = gradEntropy.narrow(0, start, n).unsqueeze(1);
        logp.add_(entropy.narrow(0, start, n).unsqueeze(1)).mul_(gradLogits).mul_(gh);
        gradLogits.mul_(-g).sub_(logp);
      } else {
        gradLogits.mul_(-g);  // d lp / d z = onehot(target) - p
      }
      gradLogits.scatter_add_(1, targets.narrow(0, start, n).unsqueeze(1), g);
      if (temperature != 1.0) gradLogits.div_(temperature);
      const bool lowPrecision = hidden.scalar_type() != at::kFloat;
      const at::Tensor gradLogitsLow = lowPrecision ? gradLogits.to(hidden.scalar_type()) : gradLogits;
      if (needHidden) {
        at::Tensor gradHiddenChunk = gradHidden.narrow(0, start, n);  // contiguous rows: written in place
        at::matmul_out(gradHiddenChunk, gradLogitsLow, lmHead);
      }
      if (needWeight) {
        // dW accumulates over the chunks in fp32, in place (no [V, C] temporary). On CUDA, a bf16
        // model's GEMM takes bf16 inputs with fp32 accumulation (tensor cores); elsewhere the fp32
        // grad-logits themselves, not their rounded copy.
#if defined(OCTO_HAS_MM_OUT_DTYPE) && OCTO_HAS_MM_OUT_DTYPE
        if (lowPrecision && h.is_cuda()) {
          at::addmm_out(gradWeight, gradWeight, gradLogitsLow.t(), h, at::kFloat);
          continue;
        }
#endif
        gradWeight.addmm_(gradLogits.t(), h.to(at::kFloat));
      }
    }
    return {gradHidden, needWeight ? gradWeight.to(lmHead.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TokenLogprobs tokenLogprobs(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                            const TokenLogprobsOptions& options) {
  TORCH_CHECK(hidden.dim() == 2 && lmHead.dim() == 2 && hidden.size(1) == lmHead.size(1),
              "tokenLogprobs: hidden must be [N, C] and lmHead [V, C]; got ", hidden.sizes(), " and ", lmHead.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "tokenLogprobs: targets must be [N]");
  TORCH_CHECK(options.chunkSize > 0 && options.temperature > 0, "tokenLogprobs: chunkSize and temperature must be positive");
  at::Tensor targetIds = targets.to(at::kLong);
  if (targetIds.numel() > 0) {
    TORCH_CHECK(targetIds.min().item<int64_t>() >= 0 && targetIds.max().item<int64_t>() < lmHead.size(0),
                "tokenLogprobs: a target id is outside the vocabulary [0, ", lmHead.size(0), ")");
  }
  auto outputs = ChunkedLogprobs::apply(hidden, lmHead, targetIds, options.temperature, options.chunkSize, options.withEntropy);
  return {outputs[0], options.withEntropy ? outputs[1] : at::Tensor()};
}

TokenLogprobs tokenLogprobsEager(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                                 const TokenLogprobsOptions& options) {
  at::Tensor logits = at::matmul(hidden, lmHead.t()).to(at::kFloat) / options.temperature;  // [N, V]
  at::Tensor logp = at::log_softmax(logits, -1);
  TokenLogprobs out;
  out.logprobs = logp.gather(1, targets.to(at::kLong).unsqueeze(1)).squeeze(1);
  if (options.withEntropy) out.entropy = -(at::exp(logp) * logp).sum(-1);
  return out;
}

at::Tensor rowPositions(const at::Tensor& inputIds) {
  const int64_t B = inputIds.size(0), T = inputIds.size(1);
  return at::arange(T, inputIds.options().dtype(at::kLong)).expand({B, T});
}

SelectedTokens selectTokens(const at::Tensor& hidden, const at::Tensor& inputIds, const at::Tensor& need) {
  const int64_t B = hidden.size(0), T = hidden.size(1), C = hidden.size(2);
  SelectedTokens s;
  at::Tensor predicted = need.narrow(1, 1, T - 1).reshape({-1});                              // [B*(T-1)]
  s.flatIndex = predicted.nonzero().squeeze(1);                                               // [N]
  s.hidden = hidden.narrow(1, 0, T - 1).reshape({B * (T - 1), C}).index_select(0, s.flatIndex);  // [N, C]
  s.targets = inputIds.narrow(1, 1, T - 1).reshape({-1}).index_select(0, s.flatIndex);
  s.rows = at::div(s.flatIndex, T - 1, "floor");
  return s;
}

at::Tensor sequenceLogprobs(const DecoderModel& model, const at::Tensor& inputIds, const at::Tensor& attentionMask,
                            double temperature, int64_t chunkSize) {
  c10::InferenceMode inference;
  const int64_t vocab = model.spec().vocabSize;
  TORCH_CHECK(inputIds.numel() == 0 || (inputIds.min().item<int64_t>() >= 0 && inputIds.max().item<int64_t>() < vocab),
              "inputIds holds a token id outside the model's vocabulary [0, ", vocab, ")");
  const at::Device device = model.device();
  const at::Tensor ids = inputIds.to(device, at::kLong);
  const at::Tensor attention = attentionMask.to(device, at::kBool);
  const int64_t B = ids.size(0), T = ids.size(1);
  at::Tensor out = at::zeros({B, T}, at::TensorOptions().device(device).dtype(at::kFloat));
  if (T < 2) return out.cpu();
  at::Tensor hidden = model.hiddenStates(ids, rowPositions(ids), nullptr, attention);
  SelectedTokens tokens = selectTokens(hidden, ids, attention);
  TokenLogprobsOptions options;
  options.temperature = temperature;
  options.chunkSize = chunkSize;
  at::Tensor lp = tokenLogprobs(tokens.hidden, model.lmHead(), tokens.targets, options).logprobs;
  at::Tensor predicted = at::zeros({B * (T - 1)}, out.options()).index_copy_(0, tokens.flatIndex, lp);
  out.narrow(1, 1, T - 1).copy_(predicted.view({B, T - 1}));
  return out.cpu();
}

}  // namespace octo
