// The fused policy + KL loss of docs/methods.md §4: one custom autograd op whose forward computes the
// loss and every logging statistic in a single pass over the tokens and saves only the
// per-token gradient, instead of an autograd graph of a dozen elementwise ops.
//
// Per token t of sequence i:
//   ratio     token:    r_t = exp(clamp(lp - lp_old, ±20))
//             sequence: r_t = exp(sg(clamp(log s_i, ±20)) + lp - sg(lp)), log s_i = mean_{m_loss,i}(lp - lp_old)
//   policy    L_t = max(-r A, -clip(r, 1-εlow, 1+εhigh) A); with dual clip and A < 0: min(L_t, -c A)
//   KL        d = lp_ref - lp; k1 = -d, k2 = d²/2, k3 = exp(d) - d - 1 (d clamped to ±10)
//   total     agg(L, m_loss) + β·agg(KL, m_kl) - η·agg(H, m_loss)
// Aggregation normalisers (token and sequence counts) are those of the whole optimizer step,
// passed in, so that micro-batches sum to exactly the loss of one big batch.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

enum class RatioLevel { Token, Sequence };
enum class KlEstimator { K1, K2, K3 };
enum class LossAggregation { TokenMean, SeqMeanTokenMean, SeqMeanTokenSum, SeqMeanTokenSumNorm };

RatioLevel parseRatioLevel(const std::string& name);        // "token" | "sequence"
KlEstimator parseKlEstimator(const std::string& name);      // "k1" | "k2" | "k3"
LossAggregation parseLossAggregation(const std::string& name);  // "token-mean" | "seq-mean-token-mean" | ...

struct PolicyLossOptions {
  RatioLevel ratioLevel = RatioLevel::Token;
  double clipLow = 0.2;
  double clipHigh = 0.2;
  double dualClip = 0.0;  // c > 1 enables the dual clip for A < 0 (0 = off)
  KlEstimator klEstimator = KlEstimator::K3;
  double klCoef = 0.0;
  double entropyCoef = 0.0;
  LossAggregation aggregation = LossAggregation::TokenMean;
};

// Step-wide counts the aggregation divides by.
struct LossNormalizers {
  double lossTokens = 1;  // Σ m_loss over the optimizer step (token-mean of the policy/entropy terms)
  double klTokens = 1;    // Σ m_kl over the optimizer step (token-mean of the KL term)
  double sequences = 1;   // sequences in the optimizer step (seq-mean-* modes)
  double maxLength = 1;   // the constant length of seq-mean-token-sum-norm (Dr.GRPO)
};

// Per-token inputs, all [N]; sequenceIds (int64, values in [0, S)) tie tokens to sequences.
struct PolicyLossInputs {
  at::Tensor logprobs;       // lp (differentiable)
  at::Tensor oldLogprobs;    // lp_old
  at::Tensor refLogprobs;    // lp_ref (may be undefined when klCoef == 0)
  at::Tensor advantages;     // A per token (a sequence advantage repeated over its tokens)
  at::Tensor lossMask;       // m_loss (float 0/1)
  at::Tensor klMask;         // m_kl (float 0/1)
  at::Tensor sequenceIds;    // [N] int64
  int64_t numSequences = 0;  // S (local)
  at::Tensor entropy;        // H per token (differentiable; may be undefined when entropyCoef == 0)
};

// Sums over this micro-batch's tokens; divide by the counts for means.
struct PolicyLossStats {
  double policyLoss = 0, klLoss = 0, entropyLoss = 0;  // the three aggregated terms (already normalised)
  double lossTokens = 0, klTokens = 0;                 // Σ m_loss, Σ m_kl
  double clippedTokens = 0;                            // m_loss tokens where the clipped branch is active
  double dualClippedTokens = 0;
  double ratioSum = 0;                                 // Σ_{m_loss} r
  double klSum = 0;                                    // Σ_{m_kl} KL_t
  double entropySum = 0;                               // Σ_{m_loss} H
};

struct PolicyLossResult {
  at::Tensor loss;  // scalar, differentiable w.r.t. logprobs and entropy
  PolicyLossStats stats;
};

PolicyLossResult policyLoss(const PolicyLossInputs& inputs, const PolicyLossOptions& options,
                            const LossNormalizers& normalizers);

// The same formula written with plain autograd ops: the reference the fused op is tested against.
at::Tensor policyLossEager(const PolicyLossInputs& inputs, const PolicyLossOptions& options,
                           const LossNormalizers& normalizers);

}  // namespace octo
