// Token log-probs from final hidden states and the LM head, in chunks of tokens, so the
// [tokens x vocab] fp32 logits are never materialised whole (docs/methods.md §4). The backward
// recomputes each chunk's logits instead of keeping them.
//
// Shapes: N = tokens, C = hidden size, V = vocab.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

struct TokenLogprobsOptions {
  double temperature = 1.0;  // log-probs of softmax(logits / temperature), as the sampler returns
  int64_t chunkSize = 1024;  // tokens per chunk: peak extra memory is chunkSize x V fp32
  bool withEntropy = false;  // also return the entropy of each token's distribution
};

struct TokenLogprobs {
  at::Tensor logprobs;  // [N] fp32, differentiable w.r.t. hidden and weight
  at::Tensor entropy;   // [N] fp32 (undefined unless withEntropy), differentiable too
};

// hidden [N, C], lmHead [V, C], targets [N] (int64) -> log p(target) per token.
TokenLogprobs tokenLogprobs(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                            const TokenLogprobsOptions& options);

// The same values through plain autograd ops on the full logits: the eager baseline that
// tests and the loss bench compare against.
TokenLogprobs tokenLogprobsEager(const at::Tensor& hidden, const at::Tensor& lmHead, const at::Tensor& targets,
                                 const TokenLogprobsOptions& options);

}  // namespace octo
