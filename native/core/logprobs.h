// Token log-probs from final hidden states and the LM head, in chunks of tokens, so the
// [tokens x vocab] fp32 logits are never materialised whole (docs/methods.md §4). The backward
// recomputes each chunk's logits instead of keeping them.
//
// Shapes: N = tokens, C = hidden size, V = vocab; B = rows, T = tokens per row (right-padded).
#pragma once

#include "core/torch_prelude.h"

namespace octo {

class DecoderModel;

struct TokenLogprobsOptions {
  double temperature = 1.0;  // log-probs of softmax(logits / temperature), as the sampler returns
  int64_t chunkSize = 0;     // tokens per chunk (> 0): peak extra memory is chunkSize x V fp32;
                             // no default here: the one default is lib/native.ts's LOGPROB_CHUNK_SIZE
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

// log p(token t | tokens < t) for every real token t >= 1 of each row, no gradient, chunked:
// [B, T] fp32 with 0 at t = 0 and at padding (old and reference log-probs).
at::Tensor sequenceLogprobs(const DecoderModel& model, const at::Tensor& inputIds, const at::Tensor& attentionMask,
                            double temperature, int64_t chunkSize);

}  // namespace octo
