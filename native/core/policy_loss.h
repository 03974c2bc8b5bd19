// The fused policy + KL loss of docs/methods.md §4: one custom autograd op whose forward computes the
// loss and every logging statistic in a single pass over the tokens and saves only the
// per-token gradient, instead of an autograd graph of a dozen elementwise ops.
//
// Per token t of sequence i (method names as in the papers; docs/methods.md §4):
//   ratio     token (PPO, GRPO):  r_t = exp(clamp(lp - lp_old, ±20))
//             sequence (GSPO's "gspo_token" variant, Zheng et al. 2025):
//                       r_t = exp(sg(clamp(log s_i, ±20)) + lp - sg(lp)), log s_i = mean_{m_loss,i}(lp - lp_old)
//   policy    PPO clip: L_t = max(-r A, -clip(r, 1-εlow, 1+εhigh) A); εhigh > εlow is DAPO's clip-higher
//             dual clip (Ye et al. 2020), c > 1 and A < 0: min(L_t, -c A)
//   KL        d = lp_ref - lp; Schulman's estimators ("Approximating KL Divergence", 2020):
//             k1 = -d, k2 = d²/2, k3 = exp(d) - d - 1 (unbiased and >= 0; d clamped to ±10)
//   total     agg(L, m_loss) + β·agg(KL, m_kl) - η·agg(H, m_loss)
//   agg       token-mean (DAPO's token-level loss) | seq-mean-token-mean (GRPO) | seq-mean-token-sum |
//             seq-mean-token-sum-norm (Dr.GRPO: Σ_t / (sequences · constant maxLength), no 1/|o_i|)
// DAPO's dynamic sampling and Dr.GRPO's norm_std=false act on advantages: lib/rl/advantages.ts.
// Aggregation normalisers (token and sequence counts) are those of the whole optimizer step,
// passed in, so that micro-batches sum to exactly the loss of one big batch.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

enum class RatioLevel { Token, Sequence };  // Sequence: GSPO-token ("gspo_token")
enum class KlEstimator { K1, K2, K3 };
enum class LossAggregation { TokenMean, SeqMeanTokenMean, SeqMeanTokenSum, SeqMeanTokenSumNorm };

RatioLevel parseRatioLevel(const std::string& name);        // "token" | "sequence"
KlEstimator parseKlEstimator(const std::string& name);      // "k1" | "k2" | "k3"
LossAggregation parseLossAggregation(const std::string& name);  // "token-mean" | "seq-mean-token-mean" | ...

struct PolicyLossOptions {
  RatioLevel ratioLevel = RatioLevel::Token;
  double clipLow = 0.2;
  double clipHigh = 0.2;  // > clipLow: DAPO's clip-higher
  double dualClip = 0.0;  // c > 1 enables the dual clip for A < 0 (0 = off; Ye et al. 2020)
  KlEstimator klEstimator = KlEstimator::K3;  // Schulman's k1/k2/k3
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

// The loss statistics, in order: the one list of their names. X(name, comment) is expanded for
// the struct below, the binding's conversion to JS (native/binding/ops.cpp) and the order the
// fused op computes them in; lib/native.ts's LOSS_STAT_KEYS lists the same names for TS.
// Sums over this micro-batch's tokens; divide by the counts for means.
#define OCTO_LOSS_STATS(X)                                                            \
  X(policyLoss, "the aggregated policy term (already normalised)")                   \
  X(klLoss, "the aggregated KL term, β included (already normalised)")               \
  X(entropyLoss, "the aggregated entropy term, -η included (already normalised)")    \
  X(lossTokens, "Σ m_loss")                                                          \
  X(klTokens, "Σ m_kl")                                                              \
  X(clippedTokens, "m_loss tokens where the clipped branch is active (clip fraction)") \
  X(dualClippedTokens, "m_loss tokens where the dual clip is active")                \
  X(ratioSum, "Σ_{m_loss} r (mean ratio)")                                           \
  X(klSum, "Σ_{m_kl} KL_t (mean KL)")                                                \
  X(entropySum, "Σ_{m_loss} H (mean entropy)")

struct PolicyLossStats {
#define OCTO_LOSS_STAT_FIELD(name, comment) double name = 0;
  OCTO_LOSS_STATS(OCTO_LOSS_STAT_FIELD)
#undef OCTO_LOSS_STAT_FIELD
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
