// Token log-probs from final hidden states and the LM head, in chunks of tokens, so the
// [tokens x vocab] fp32 logits are never materialised whole (docs/methods.md §4).
//
// Each call is planned from a byte budget (planTokenLogprobs): how many tokens a chunk holds, and
// how the backward gets each token's probabilities p back:
//   projected   LM head frozen: the forward also projects p (and p·log p) onto the head, [N, C],
//               and the backward is elementwise on those: 2 head GEMMs, as eager.
//   kept        LM head trained, and log p of every token fits the budget: kept from the forward
//               ([N, V] fp32), 3 head GEMMs, as eager.
//   recomputed  LM head trained, and it does not fit: the backward recomputes each chunk's logits,
//               one head GEMM more than eager (4).
//
// Shapes: N = tokens, C = hidden size, V = vocab; B = rows, T = tokens per row (right-padded).
#pragma once

#include "core/torch_prelude.h"

namespace octo {

class DecoderModel;

struct TokenLogprobsOptions {
  double temperature = 1.0;       // log-probs of softmax(logits / temperature), as the sampler returns
  int64_t chunkSize = 0;          // tokens per chunk; 0: the most that the memory budget allows
  int64_t memoryBudgetBytes = 0;  // bytes the op may allocate, its gradients included (planTokenLogprobs); 0: defaultLogprobsBudget
  bool withEntropy = false;       // also return the entropy of each token's distribution
};

// How the backward recovers the probabilities (see the top of this file).
enum class LogprobsBackward { None, Projected, Kept, Recomputed };
const char* logprobsBackwardName(LogprobsBackward backward);  // "none" | "projected" | "kept" | "recomputed"

struct LogprobsPlan {
  int64_t chunkTokens = 1;  // tokens per chunk
  LogprobsBackward backward = LogprobsBackward::None;
  int64_t budgetBytes = 0;  // the budget it was planned under
  // The most bytes it holds at once beyond its inputs, as planned: the reused chunk buffers, the kept
  // log-probs or the projections, the gradients it returns and its per-token vectors.
  int64_t workingBytes = 0;
};

// What the eager formula holds at its peak beyond its inputs (measured with the counting allocator:
// three [N, V] fp32 buffers, or one beside the gradients when those are larger).
int64_t eagerLogprobsPeak(int64_t tokens, int64_t hidden, int64_t vocab, bool lmHeadGrad);

// The default budget: a share of eagerLogprobsPeak (a quarter with the LM head frozen, half with it
// trained) and at most 2 GiB.
int64_t defaultLogprobsBudget(int64_t tokens, int64_t hidden, int64_t vocab, bool lmHeadGrad);

// The plan of one call. The budget covers everything the op allocates, the gradients it returns
// included; `dtype` below fp32 also needs one [chunk, V] buffer in that dtype. Chunks are of equal
// size, as large as the budget allows, but on CPU at most 512 tokens (larger ones run slower there).
// They hold at least 32 tokens (or all), so a budget smaller than that, or one the LM head's gradient
// fills alone, is exceeded: below ~43 tokens a 32-token chunk is more than a quarter of eager (a few
// MB at most; vocab tiles would fix that and are not worth their code there).
LogprobsPlan planTokenLogprobs(int64_t tokens, int64_t hidden, int64_t vocab, at::ScalarType dtype, at::Device device,
                               bool hiddenGrad, bool lmHeadGrad, const TokenLogprobsOptions& options);

struct TokenLogprobs {
  at::Tensor logprobs;  // [N] fp32, differentiable w.r.t. hidden and weight
  at::Tensor entropy;   // [N] fp32 (undefined unless withEntropy), differentiable too
  LogprobsPlan plan;    // how it was computed (the eager formula: a default plan)
};

// hidden [N, C], lmHead [V, C], targets [N] (int64) -> log p(target) per token. The plan follows
// which of hidden and lmHead require grad (none under no-grad or inference mode).
TokenLogprobs tokenLogprobs(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                            const TokenLogprobsOptions& options);

// Where the gradients of tokenLogprobsWithGradients go. A defined tensor is written in place and must
// be contiguous: hidden in hidden's dtype [N, C], lmHead fp32 [V, C] (its accumulator). An undefined
// one is allocated when wanted.
struct TokenLogprobsGradients {
  bool wantHidden = true, wantLmHead = true;
  at::Tensor hidden;
  at::Tensor lmHead;
};

// The gradients of Σ gradLogprobs·logprobs (+ Σ gradEntropy·entropy) w.r.t. hidden and lmHead, through
// the same plan, forward and backward as tokenLogprobs under autograd, but without a graph: for callers
// that hold the upstream gradients already (ops.tokenLogprobs), which want them in their own buffers.
TokenLogprobs tokenLogprobsWithGradients(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                                         const TokenLogprobsOptions& options, const at::Tensor& gradLogprobs,
                                         const at::Tensor& gradEntropy, TokenLogprobsGradients& gradients);

// The same values through plain autograd ops on the full logits: the eager baseline that
// tests and the loss bench compare against.
TokenLogprobs tokenLogprobsEager(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                                 const TokenLogprobsOptions& options);

// Right padding: positions 0..T-1 in every row. inputIds [B, T] -> [B, T] long.
at::Tensor rowPositions(const at::Tensor& inputIds);

struct SelectedTokens {
  at::Tensor hidden;     // [N, C]: hidden state before each selected token
  at::Tensor targets;    // [N]
  at::Tensor flatIndex;  // [N] index into the [B, T-1] grid of predicted tokens
  at::Tensor rows;       // [N] row of each token
};

// The tokens that take part (need[b, t] for t >= 1) and the hidden states [B, T, C] that predict them.
SelectedTokens selectTokens(const at::Tensor& hidden, const at::Tensor& inputIds, const at::Tensor& need);

// log p(token t | tokens < t) for every real token t >= 1 of each row, no gradient, chunked
// (chunkSize 0: from the memory budget): [B, T] fp32 with 0 at t = 0 and at padding (old and
// reference log-probs).
at::Tensor sequenceLogprobs(const DecoderModel& model, const at::Tensor& inputIds, const at::Tensor& attentionMask,
                            double temperature, int64_t chunkSize);

}  // namespace octo
