#include "core/logprobs.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "core/model.h"

namespace octo {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kFloatBytes = 4;
// What the eager formula holds at its peak, in [N, V] fp32 buffers: log_softmax's output and the two
// [N, V] gradients of its backward; with the LM head trained, at least one of them beside the [V, C]
// gradient. The counting allocator reads exactly that on CPU fp32; a bf16 model's eager formula
// makes the same fp32 buffers and copies in bf16 besides, so this is its low end.
constexpr int64_t kEagerPeakBuffers = 3;
// The default budget's share of eager's peak. A quarter while only hidden states train; half with
// the LM head trained, where keeping log p (one [N, V] of eager's three) saves the fourth head GEMM.
constexpr double kFrozenHeadShare = 0.25;
constexpr double kTrainedHeadShare = 0.5;
// And never more than this: a share of eager at 32k tokens x 151,936 vocab is tens of GB.
constexpr int64_t kBudgetCapBytes = int64_t{2} << 30;
// Chunks hold at least this many tokens (or all of them), even where that exceeds the budget (a
// budget the LM head's gradient fills alone): smaller GEMMs lose speed faster than they save memory.
// Log p is only kept when chunks of this size still fit beside it.
constexpr int64_t kMinChunkTokens = 32;
// On CPU, larger chunks run slower, not faster: 512 tokens beat 256 and 1024 at vocab 32,000 (hidden
// 512) and at 151,936 (hidden 1536), head frozen and trained (OpenBLAS; bench loss). CUDA takes
// what the budget allows.
constexpr int64_t kFastestCpuChunkTokens = 512;
// Bytes per token of [N] vectors a plan leaves room for: log-probs, entropy, log-normalisers, the
// upstream gradients and the policy loss's own, 16 fp32 in all.
constexpr int64_t kPerTokenVectorBytes = 16 * kFloatBytes;

// Row-wise dot product of two [n, V] tensors without an [n, V] temporary.
at::Tensor rowDot(const at::Tensor& a, const at::Tensor& b) {
  return at::bmm(a.unsqueeze(1), b.unsqueeze(2)).view({a.size(0)});
}

// The [chunk, V] work buffers of one pass, allocated once and reused by every chunk: a fresh large
// CPU allocation is page-faulted anew each time. Low-precision inputs also get one buffer in their
// dtype, for the GEMMs' inputs and outputs.
class ChunkBuffers {
 public:
  ChunkBuffers(int64_t chunkTokens, int64_t vocab, int count, const at::Tensor& hidden) {
    const int64_t rows = std::max<int64_t>(std::min(chunkTokens, hidden.size(0)), 0);
    for (int i = 0; i < count; ++i) fp32_.push_back(at::empty({rows, vocab}, hidden.options().dtype(at::kFloat)));
    if (hidden.scalar_type() != at::kFloat) low_ = at::empty({rows, vocab}, hidden.options());
  }
  bool lowPrecision() const { return low_.defined(); }
  at::Tensor rows(int buffer, int64_t n) const { return fp32_[buffer].narrow(0, 0, n); }  // [n, V] fp32
  at::Tensor lowRows(int64_t n) const { return low_.narrow(0, 0, n); }                    // [n, V] in the inputs' dtype

  // Buffer 0 := h @ W^T / temperature in fp32 ([n, V]).
  at::Tensor logits(const at::Tensor& h, const at::Tensor& lmHead, double temperature) const {
    at::Tensor logits = rows(0, h.size(0));
    if (lowPrecision()) {
      at::Tensor lowLogits = lowRows(h.size(0));
      at::mm_out(lowLogits, h, lmHead.t());
      logits.copy_(lowLogits);
    } else {
      at::mm_out(logits, h, lmHead.t());
    }
    return temperature == 1.0 ? logits : logits.div_(temperature);
  }

  // into [n, C] fp32 := rows [n, V] fp32 @ W.
  void projectOntoHead(const at::Tensor& rowsOfV, const at::Tensor& lmHead, at::Tensor into) const {
    if (lowPrecision()) {
      into.copy_(at::mm(lowRows(rowsOfV.size(0)).copy_(rowsOfV), lmHead));
    } else {
      at::mm_out(into, rowsOfV, lmHead);
    }
  }

 private:
  std::vector<at::Tensor> fp32_;
  at::Tensor low_;
};

// What the backward reads besides the inputs and the entropy; which ones are defined follows the plan.
struct SavedForBackward {
  at::Tensor logNormalizers;    // recomputed: logsumexp of each token's logits [N]
  at::Tensor keptLogprobs;      // kept: log p [N, V]
  at::Tensor projected;         // projected: p @ W [N, C] fp32
  at::Tensor projectedEntropy;  // projected, with entropy: (p ∘ log p) @ W [N, C] fp32
};

struct ForwardOutputs {
  at::Tensor logprobs;  // [N] fp32
  at::Tensor entropy;   // [N] fp32, or [0] without entropy
  SavedForBackward saved;
};

ForwardOutputs chunkedForward(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                              const LogprobsPlan& plan, double temperature, bool withEntropy) {
  at::NoGradGuard noGrad;
  const int64_t N = hidden.size(0), C = hidden.size(1), V = lmHead.size(0);
  const auto floats = hidden.options().dtype(at::kFloat);
  ForwardOutputs out;
  out.logprobs = at::empty({N}, floats);
  out.entropy = withEntropy ? at::empty({N}, floats) : at::zeros({0}, floats);
  SavedForBackward& saved = out.saved;
  if (plan.backward == LogprobsBackward::Recomputed) saved.logNormalizers = at::empty({N}, floats);
  if (plan.backward == LogprobsBackward::Kept) saved.keptLogprobs = at::empty({N, V}, floats);
  if (plan.backward == LogprobsBackward::Projected) {
    saved.projected = at::empty({N, C}, floats);
    if (withEntropy) saved.projectedEntropy = at::empty({N, C}, floats);
  }
  const ChunkBuffers buffers(plan.chunkTokens, V, 1, hidden);
  for (int64_t start = 0; start < N; start += plan.chunkTokens) {
    const int64_t n = std::min(plan.chunkTokens, N - start);
    const at::Tensor targetIds = targets.narrow(0, start, n).unsqueeze(1);  // [n, 1]
    at::Tensor logits = buffers.logits(hidden.narrow(0, start, n), lmHead, temperature);
    if (plan.backward == LogprobsBackward::Kept) {
      at::Tensor logp = saved.keptLogprobs.narrow(0, start, n);
      at::log_softmax_out(logp, logits, 1);
      out.logprobs.narrow(0, start, n).copy_(logp.gather(1, targetIds).squeeze(1));
      if (withEntropy) out.entropy.narrow(0, start, n).copy_(-rowDot(at::exp_out(logits, logp), logp));  // H = -Σ p log p
      continue;
    }
    // log p(target) = z_target - logsumexp(z), with the buffer turned into exp(z - max z) on the way.
    const at::Tensor targetLogits = logits.gather(1, targetIds);  // [n, 1]
    const at::Tensor maxLogits = at::amax(logits, {1}, /*keepdim=*/true);
    at::Tensor probs = logits.sub_(maxLogits).exp_();
    const at::Tensor sums = probs.sum(1, /*keepdim=*/true);
    const at::Tensor logNormalizers = maxLogits + sums.log();  // [n, 1]
    out.logprobs.narrow(0, start, n).copy_((targetLogits - logNormalizers).squeeze(1));
    if (plan.backward == LogprobsBackward::Recomputed) saved.logNormalizers.narrow(0, start, n).copy_(logNormalizers.squeeze(1));
    const bool project = plan.backward == LogprobsBackward::Projected;
    if (!project && !withEntropy) continue;
    probs.div_(sums);
    if (project) buffers.projectOntoHead(probs, lmHead, saved.projected.narrow(0, start, n));
    if (withEntropy) {
      const at::Tensor plogp = probs.xlogy_(probs);  // p log p, 0 where p underflowed to 0
      out.entropy.narrow(0, start, n).copy_(-plogp.sum(1));
      if (project) buffers.projectOntoHead(plogp, lmHead, saved.projectedEntropy.narrow(0, start, n));
    }
  }
  return out;
}

// Writes d/d hidden into gradHidden ([N, C], hidden's dtype) and d/d lmHead into gradLmHead ([V, C]
// fp32), each only when defined. gradLogprobs and gradEntropy are [N] or undefined (no gradient).
void chunkedBackward(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets, const at::Tensor& entropy,
                     const SavedForBackward& saved, const LogprobsPlan& plan, double temperature, bool withEntropy,
                     const at::Tensor& gradLogprobs, const at::Tensor& gradEntropy, at::Tensor gradHidden, at::Tensor gradLmHead) {
  at::NoGradGuard noGrad;
  const int64_t N = hidden.size(0), V = lmHead.size(0);
  const auto floats = hidden.options().dtype(at::kFloat);
  const bool useEntropyGrad = withEntropy && gradEntropy.defined();
  const at::Tensor g = gradLogprobs.defined() ? gradLogprobs.to(at::kFloat).unsqueeze(1) : at::zeros({N, 1}, floats);  // [N, 1]
  const at::Tensor gh = useEntropyGrad ? gradEntropy.to(at::kFloat).unsqueeze(1) : at::Tensor();                  // [N, 1]

  if (plan.backward == LogprobsBackward::Projected) {
    TORCH_CHECK(!gradLmHead.defined(), "tokenLogprobs: a projected plan has no LM-head gradient");
    if (!gradHidden.defined()) return;
    // d lp / d h = (W[target] - p W) / T;  d H / d h = -((p ∘ log p) W + H · p W) / T
    const bool inPlace = gradHidden.scalar_type() == at::kFloat;
    at::Tensor grad = inPlace ? at::index_select_out(gradHidden, lmHead, 0, targets) : lmHead.index_select(0, targets).to(at::kFloat);
    grad.sub_(saved.projected).mul_(g);
    if (useEntropyGrad) grad.sub_(at::addcmul(saved.projectedEntropy, saved.projected, entropy.unsqueeze(1)).mul_(gh));
    if (temperature != 1.0) grad.div_(temperature);
    if (!inPlace) gradHidden.copy_(grad);
    return;
  }

  TORCH_CHECK(plan.backward != LogprobsBackward::None, "tokenLogprobs: the plan kept nothing for a backward");
  if (N == 0 && gradLmHead.defined()) gradLmHead.zero_();
  const ChunkBuffers buffers(plan.chunkTokens, V, useEntropyGrad ? 2 : 1, hidden);
  for (int64_t start = 0; start < N && (gradHidden.defined() || gradLmHead.defined()); start += plan.chunkTokens) {
    const int64_t n = std::min(plan.chunkTokens, N - start);
    const at::Tensor h = hidden.narrow(0, start, n);
    const at::Tensor gChunk = g.narrow(0, start, n);
    // log p of the chunk, and in buffer 0 d loss / d z (starting from p).
    at::Tensor gradLogits = buffers.rows(0, n), logp;
    if (plan.backward == LogprobsBackward::Kept) {
      logp = saved.keptLogprobs.narrow(0, start, n);
      at::exp_out(gradLogits, logp);
    } else {  // recomputed: the one head GEMM more
      logp = buffers.logits(h, lmHead, temperature).sub_(saved.logNormalizers.narrow(0, start, n).unsqueeze(1));
    }
    if (useEntropyGrad) {
      // d H / d z_k = -p_k (log p_k + H)
      at::Tensor entropyTerm = buffers.rows(1, n);
      at::add_out(entropyTerm, logp, entropy.narrow(0, start, n).unsqueeze(1));
      if (plan.backward == LogprobsBackward::Recomputed) logp.exp_();  // buffer 0 now holds p
      entropyTerm.mul_(gradLogits).mul_(gh.narrow(0, start, n));
      gradLogits.mul_(-gChunk).sub_(entropyTerm);
    } else {
      if (plan.backward == LogprobsBackward::Recomputed) logp.exp_();
      gradLogits.mul_(-gChunk);  // d lp / d z = onehot(target) - p
    }
    gradLogits.scatter_add_(1, targets.narrow(0, start, n).unsqueeze(1), gChunk);
    if (temperature != 1.0) gradLogits.div_(temperature);
    const at::Tensor gradLogitsLow = buffers.lowPrecision() ? buffers.lowRows(n).copy_(gradLogits) : gradLogits;
    if (gradHidden.defined()) {
      at::Tensor gradHiddenRows = gradHidden.narrow(0, start, n);  // contiguous rows: written in place
      at::mm_out(gradHiddenRows, gradLogitsLow, lmHead);
    }
    if (gradLmHead.defined()) {
      // dW accumulates over the chunks in fp32, in place. On CUDA, a bf16 model's GEMM takes bf16
      // inputs with fp32 accumulation (tensor cores), into a zeroed accumulator as before; elsewhere
      // the fp32 grad-logits themselves, not their rounded copy, and the first chunk overwrites
      // (beta 0 ignores what the buffer held, NaN included), so a caller's buffer needs no zeroing.
#if defined(OCTO_HAS_MM_OUT_DTYPE) && OCTO_HAS_MM_OUT_DTYPE
      if (buffers.lowPrecision() && h.is_cuda()) {
        if (start == 0) gradLmHead.zero_();
        at::addmm_out(gradLmHead, gradLmHead, gradLogitsLow.t(), h, at::kFloat);
        continue;
      }
#endif
      gradLmHead.addmm_(gradLogits.t(), h.to(at::kFloat), /*beta=*/start == 0 ? 0.0 : 1.0, /*alpha=*/1.0);
    }
  }
}

struct ChunkedLogprobs : public torch::autograd::Function<ChunkedLogprobs> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& lmHead,
                               const at::Tensor& targets, double temperature, int64_t chunkTokens, int64_t backward,
                               bool withEntropy) {
    LogprobsPlan plan;
    plan.chunkTokens = chunkTokens;
    plan.backward = static_cast<LogprobsBackward>(backward);
    ForwardOutputs out = chunkedForward(hidden, lmHead, targets, plan, temperature, withEntropy);
    const SavedForBackward& s = out.saved;
    ctx->save_for_backward({hidden, lmHead, targets, out.entropy, s.logNormalizers, s.keptLogprobs, s.projected, s.projectedEntropy});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunkTokens"] = chunkTokens;
    ctx->saved_data["backward"] = backward;
    ctx->saved_data["withEntropy"] = withEntropy;
    return {out.logprobs, out.entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &lmHead = saved[1], &targets = saved[2], &entropy = saved[3];
    SavedForBackward forward{saved[4], saved[5], saved[6], saved[7]};
    LogprobsPlan plan;
    plan.chunkTokens = ctx->saved_data["chunkTokens"].toInt();
    plan.backward = static_cast<LogprobsBackward>(ctx->saved_data["backward"].toInt());
    at::Tensor gradHidden = ctx->needs_input_grad(0) ? at::empty(hidden.sizes(), hidden.options()) : at::Tensor();
    at::Tensor gradLmHead = ctx->needs_input_grad(1) ? at::empty(lmHead.sizes(), lmHead.options().dtype(at::kFloat)) : at::Tensor();
    chunkedBackward(hidden, lmHead, targets, entropy, forward, plan, ctx->saved_data["temperature"].toDouble(),
                    ctx->saved_data["withEntropy"].toBool(), gradOutputs[0], gradOutputs[1], gradHidden, gradLmHead);
    return {gradHidden, gradLmHead.defined() ? gradLmHead.to(lmHead.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The checked int64 targets.
at::Tensor checkedTargets(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                          const TokenLogprobsOptions& options) {
  TORCH_CHECK(hidden.dim() == 2 && lmHead.dim() == 2 && hidden.size(1) == lmHead.size(1),
              "tokenLogprobs: hidden must be [N, C] and lmHead [V, C]; got ", hidden.sizes(), " and ", lmHead.sizes());
  TORCH_CHECK(hidden.scalar_type() == lmHead.scalar_type(), "tokenLogprobs: hidden is ", hidden.scalar_type(),
              " but lmHead is ", lmHead.scalar_type(), "; pass both in the model's dtype");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "tokenLogprobs: targets must be [N]");
  TORCH_CHECK(options.chunkSize >= 0 && options.memoryBudgetBytes >= 0,
              "tokenLogprobs: chunkSize and memoryBudgetBytes must be >= 0 (0: from the budget / the default budget)");
  TORCH_CHECK(options.temperature > 0, "tokenLogprobs: temperature must be positive");
  at::Tensor targetIds = targets.to(at::kLong);
  if (targetIds.numel() > 0) {
    TORCH_CHECK(targetIds.min().item<int64_t>() >= 0 && targetIds.max().item<int64_t>() < lmHead.size(0),
                "tokenLogprobs: a target id is outside the vocabulary [0, ", lmHead.size(0), ")");
  }
  return targetIds;
}

}  // namespace

const char* logprobsBackwardName(LogprobsBackward backward) {
  switch (backward) {
    case LogprobsBackward::None: return "none";
    case LogprobsBackward::Projected: return "projected";
    case LogprobsBackward::Kept: return "kept";
    case LogprobsBackward::Recomputed: return "recomputed";
  }
  return "unknown";
}

int64_t eagerLogprobsPeak(int64_t tokens, int64_t hidden, int64_t vocab, bool lmHeadGrad) {
  const int64_t logits = tokens * vocab * kFloatBytes;
  const int64_t gradients = (lmHeadGrad ? vocab * hidden * kFloatBytes : 0) + tokens * hidden * kFloatBytes;
  return std::max(kEagerPeakBuffers * logits, logits + gradients);
}

int64_t defaultLogprobsBudget(int64_t tokens, int64_t hidden, int64_t vocab, bool lmHeadGrad) {
  const double share = lmHeadGrad ? kTrainedHeadShare : kFrozenHeadShare;
  const double eagerPeak = static_cast<double>(eagerLogprobsPeak(tokens, hidden, vocab, lmHeadGrad));
  return static_cast<int64_t>(std::min(share * eagerPeak, static_cast<double>(kBudgetCapBytes)));
}

LogprobsPlan planTokenLogprobs(int64_t tokens, int64_t hidden, int64_t vocab, at::ScalarType dtype, at::Device device,
                               bool hiddenGrad, bool lmHeadGrad, const TokenLogprobsOptions& options) {
  LogprobsPlan plan;
  plan.budgetBytes = options.memoryBudgetBytes > 0 ? options.memoryBudgetBytes
                                                   : defaultLogprobsBudget(tokens, hidden, vocab, lmHeadGrad);
  const int64_t elementBytes = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t rowBytes = vocab * kFloatBytes;                                // one token's fp32 logits
  const int64_t lowRowBytes = dtype == at::kFloat ? 0 : vocab * elementBytes;  // and their copy in a low-precision dtype
  const int64_t smallestChunk = options.chunkSize > 0 ? std::min(options.chunkSize, tokens) : std::min(tokens, kMinChunkTokens);
  // Held by every plan: the per-token vectors of the op and of the loss around it, and d/d hidden.
  int64_t fixedBytes = tokens * kPerTokenVectorBytes + (hiddenGrad ? tokens * hidden * elementBytes : 0);
  int64_t chunkBuffers = 1;
  if (!hiddenGrad && !lmHeadGrad) {
    plan.backward = LogprobsBackward::None;
  } else if (!lmHeadGrad) {
    plan.backward = LogprobsBackward::Projected;
    // p W (and (p ∘ log p) W) of every token, and the backward's two [N, C] temporaries.
    fixedBytes += tokens * hidden * kFloatBytes * ((options.withEntropy ? 2 : 1) + 2);
  } else {
    chunkBuffers = options.withEntropy ? 2 : 1;  // the backward's d loss / d z (and the entropy term)
    // The fp32 accumulator of d/d lmHead (and its copy in the model's dtype, returned at the end).
    fixedBytes += vocab * hidden * (kFloatBytes + (dtype == at::kFloat ? 0 : elementBytes));
    const int64_t keptBytes = tokens * rowBytes;
    const bool keep = fixedBytes + keptBytes + smallestChunk * (chunkBuffers * rowBytes + lowRowBytes) <= plan.budgetBytes;
    plan.backward = keep ? LogprobsBackward::Kept : LogprobsBackward::Recomputed;
    if (keep) fixedBytes += keptBytes;
  }
  const int64_t chunkBytesPerToken = chunkBuffers * rowBytes + lowRowBytes;
  const int64_t fitting = std::max<int64_t>(plan.budgetBytes - fixedBytes, 0) / chunkBytesPerToken;
  int64_t chosen = options.chunkSize;
  if (chosen == 0) {
    const int64_t fastest = device.is_cpu() ? kFastestCpuChunkTokens : fitting;
    const int64_t largest = std::max(std::min(fitting, fastest), smallestChunk);
    // Chunks of equal size, not a small one at the end.
    const int64_t chunks = (tokens + largest - 1) / std::max<int64_t>(largest, 1);
    chosen = chunks > 0 ? (tokens + chunks - 1) / chunks : 1;
  }
  plan.chunkTokens = std::max<int64_t>(std::min(chosen, tokens), 1);
  plan.workingBytes = fixedBytes + std::min(plan.chunkTokens, tokens) * chunkBytesPerToken;
  return plan;
}

TokenLogprobs tokenLogprobs(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                            const TokenLogprobsOptions& options) {
  const at::Tensor targetIds = checkedTargets(hidden, lmHead, targets, options);
  const bool grad = at::GradMode::is_enabled();
  const LogprobsPlan plan = planTokenLogprobs(hidden.size(0), hidden.size(1), lmHead.size(0), hidden.scalar_type(), hidden.device(),
                                              grad && hidden.requires_grad(), grad && lmHead.requires_grad(), options);
  if (plan.backward == LogprobsBackward::None) {
    ForwardOutputs out = chunkedForward(hidden, lmHead, targetIds, plan, options.temperature, options.withEntropy);
    return {out.logprobs, options.withEntropy ? out.entropy : at::Tensor(), plan};
  }
  auto outputs = ChunkedLogprobs::apply(hidden, lmHead, targetIds, options.temperature, plan.chunkTokens,
                                        static_cast<int64_t>(plan.backward), options.withEntropy);
  return {outputs[0], options.withEntropy ? outputs[1] : at::Tensor(), plan};
}

TokenLogprobs tokenLogprobsWithGradients(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                                         const TokenLogprobsOptions& options, const at::Tensor& gradLogprobs,
                                         const at::Tensor& gradEntropy, TokenLogprobsGradients& gradients) {
  const at::Tensor targetIds = checkedTargets(hidden, lmHead, targets, options);
  const int64_t N = hidden.size(0), C = hidden.size(1), V = lmHead.size(0);
  const LogprobsPlan plan =
      planTokenLogprobs(N, C, V, hidden.scalar_type(), hidden.device(), gradients.wantHidden, gradients.wantLmHead, options);
  ForwardOutputs out = chunkedForward(hidden, lmHead, targetIds, plan, options.temperature, options.withEntropy);
  // The caller's buffer when given, else a new one; none when not wanted.
  auto destination = [](at::Tensor& given, bool wanted, const at::Tensor& like, at::ScalarType dtype, const char* name) {
    if (!wanted) return at::Tensor();
    if (!given.defined()) given = at::empty(like.sizes(), like.options().dtype(dtype));
    TORCH_CHECK(given.sizes() == like.sizes() && given.scalar_type() == dtype && given.device() == like.device() && given.is_contiguous(),
                "tokenLogprobs: the gradient buffer for ", name, " must be a contiguous ", dtype, " tensor of shape ", like.sizes(),
                " on ", like.device(), "; got ", given.scalar_type(), " ", given.sizes(), " on ", given.device());
    return given;
  };
  at::Tensor gradHidden = destination(gradients.hidden, gradients.wantHidden, hidden, hidden.scalar_type(), "hidden");
  at::Tensor gradLmHead = destination(gradients.lmHead, gradients.wantLmHead, lmHead, at::kFloat, "lmHead");
  if (plan.backward != LogprobsBackward::None)
    chunkedBackward(hidden, lmHead, targetIds, out.entropy, out.saved, plan, options.temperature, options.withEntropy,
                    gradLogprobs, gradEntropy, gradHidden, gradLmHead);
  return {out.logprobs, options.withEntropy ? out.entropy : at::Tensor(), plan};
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
