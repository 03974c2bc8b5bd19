#include "core/policy_loss.h"

#include <torch/csrc/autograd/custom_function.h>

namespace octo {

namespace {

constexpr double kMaxLogRatio = 20.0;  // docs/methods.md §4: log-ratio clamped to ±20 before exp
constexpr double kMaxKlLogRatio = 10.0;  // k3: d clamped to ±10

// Per-token weights that turn Σ_t w_t x_t into the aggregation of x over `mask`.
at::Tensor aggregationWeights(const at::Tensor& mask, const at::Tensor& sequenceIds, int64_t numSequences,
                              LossAggregation mode, double tokenCount, const LossNormalizers& n) {
  switch (mode) {
    case LossAggregation::TokenMean:
      return mask / std::max(tokenCount, 1.0);
    case LossAggregation::SeqMeanTokenMean: {
      // Each sequence's own token count: sequences never straddle micro-batches, so local counts are exact.
      at::Tensor perSequence = at::zeros({numSequences}, mask.options()).index_add_(0, sequenceIds, mask);
      return mask / (perSequence.clamp_min(1.0).index_select(0, sequenceIds) * std::max(n.sequences, 1.0));
    }
    case LossAggregation::SeqMeanTokenSum:
      return mask / std::max(n.sequences, 1.0);
    case LossAggregation::SeqMeanTokenSumNorm:  // Dr.GRPO: a constant length instead of |o_i|
      return mask / (std::max(n.sequences, 1.0) * std::max(n.maxLength, 1.0));
  }
  TORCH_CHECK(false, "unknown loss aggregation");
}

// Attaches a gradient computed in the forward pass to the loss value.
struct AttachGradient : public torch::autograd::Function<AttachGradient> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logprobs,
                            const c10::optional<at::Tensor>& entropy, const at::Tensor& value, const at::Tensor& gradLogprobs,
                            const c10::optional<at::Tensor>& gradEntropy) {
    ctx->save_for_backward({gradLogprobs, gradEntropy.value_or(at::Tensor())});
    return value.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];
    return {saved[0] * g, saved[1].defined() ? saved[1] * g : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void checkInputs(const PolicyLossInputs& in, const PolicyLossOptions& options) {
  const int64_t N = in.logprobs.size(0);
  auto check = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.defined() && t.dim() == 1 && t.size(0) == N, "policyLoss: ", name, " must be [", N, "] like logprobs");
  };
  check(in.oldLogprobs, "oldLogprobs");
  check(in.advantages, "advantages");
  check(in.lossMask, "lossMask");
  check(in.klMask, "klMask");
  check(in.sequenceIds, "sequenceIds");
  if (options.klCoef != 0) check(in.refLogprobs, "refLogprobs (needed when klCoef != 0)");
  if (options.entropyCoef != 0) check(in.entropy, "entropy (needed when entropyCoef != 0)");
  if (N > 0)
    TORCH_CHECK(in.sequenceIds.min().item<int64_t>() >= 0 && in.sequenceIds.max().item<int64_t>() < in.numSequences,
                "policyLoss: sequenceIds must lie in [0, numSequences)");
}

}  // namespace

RatioLevel parseRatioLevel(const std::string& name) {
  if (name == "token") return RatioLevel::Token;
  if (name == "sequence") return RatioLevel::Sequence;
  TORCH_CHECK(false, "unknown ratio level '", name, "' (token, sequence)");
}

KlEstimator parseKlEstimator(const std::string& name) {
  if (name == "k1") return KlEstimator::K1;
  if (name == "k2") return KlEstimator::K2;
  if (name == "k3") return KlEstimator::K3;
  TORCH_CHECK(false, "unknown KL estimator '", name, "' (k1, k2, k3)");
}

LossAggregation parseLossAggregation(const std::string& name) {
  if (name == "token-mean") return LossAggregation::TokenMean;
  if (name == "seq-mean-token-mean") return LossAggregation::SeqMeanTokenMean;
  if (name == "seq-mean-token-sum") return LossAggregation::SeqMeanTokenSum;
  if (name == "seq-mean-token-sum-norm") return LossAggregation::SeqMeanTokenSumNorm;
  TORCH_CHECK(false, "unknown loss aggregation '", name,
              "' (token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm)");
}

PolicyLossResult policyLoss(const PolicyLossInputs& in, const PolicyLossOptions& o, const LossNormalizers& n) {
  checkInputs(in, o);
  at::Tensor value, gradLogprobs, gradEntropy, statsVector;
  {
    at::NoGradGuard noGrad;
    const at::Tensor lp = in.logprobs.detach().to(at::kFloat);
    const at::Tensor lossMask = in.lossMask.to(lp.options()), klMask = in.klMask.to(lp.options());
    const at::Tensor advantages = in.advantages.to(lp.options());
    const at::Tensor seq = in.sequenceIds.to(at::kLong);
    const at::Tensor logRatio = lp - in.oldLogprobs.to(lp.options());

    // Ratio and d ratio / d lp.
    at::Tensor ratio, ratioGrad;
    if (o.ratioLevel == RatioLevel::Token) {  // PPO / GRPO token ratio
      ratio = at::exp(logRatio.clamp(-kMaxLogRatio, kMaxLogRatio));
      ratioGrad = ratio * (logRatio.abs() <= kMaxLogRatio).to(lp.scalar_type());
    } else {  // GSPO-token ("gspo_token"): the sequence ratio s_i, length-normalised, on every token
      at::Tensor tokens = at::zeros({in.numSequences}, lp.options()).index_add_(0, seq, lossMask);
      at::Tensor logSeqRatio = at::zeros({in.numSequences}, lp.options()).index_add_(0, seq, logRatio * lossMask) / tokens.clamp_min(1.0);
      ratio = at::exp(logSeqRatio.clamp(-kMaxLogRatio, kMaxLogRatio)).index_select(0, seq);
      ratioGrad = ratio;  // r_t = exp(sg(log s_i) + lp - sg(lp)): d r_t / d lp_t = s_i
    }

    // PPO's clipped surrogate and d L / d ratio; clipLow != clipHigh is DAPO's clip-higher.
    const at::Tensor unclipped = -ratio * advantages;
    const at::Tensor clippedLoss = -ratio.clamp(1.0 - o.clipLow, 1.0 + o.clipHigh) * advantages;
    const at::Tensor unclippedActive = unclipped >= clippedLoss;
    at::Tensor tokenLoss = at::maximum(unclipped, clippedLoss);
    at::Tensor lossGradRatio = at::where(unclippedActive, -advantages, at::zeros_like(advantages));
    at::Tensor dualActive = at::zeros_like(unclippedActive);
    if (o.dualClip > 0) {  // dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games"): L <= -c A for A < 0
      const at::Tensor dualBound = -o.dualClip * advantages;
      dualActive = (advantages < 0).logical_and(tokenLoss > dualBound);
      tokenLoss = at::where(dualActive, dualBound, tokenLoss);
      lossGradRatio = lossGradRatio.masked_fill(dualActive, 0.0);
    }

    // KL to the reference and d KL / d lp: Schulman's k1/k2/k3 estimators ("Approximating KL
    // Divergence", 2020); k3 is unbiased and always >= 0 (GRPO's choice).
    at::Tensor kl = at::zeros_like(lp), klGrad = at::zeros_like(lp);
    if (o.klCoef != 0) {
      const at::Tensor d = in.refLogprobs.to(lp.options()) - lp;
      switch (o.klEstimator) {
        case KlEstimator::K1: kl = -d; klGrad = at::ones_like(d); break;
        case KlEstimator::K2: kl = 0.5 * d * d; klGrad = -d; break;
        case KlEstimator::K3: {
          const at::Tensor dc = d.clamp(-kMaxKlLogRatio, kMaxKlLogRatio);
          kl = at::exp(dc) - dc - 1.0;
          klGrad = (1.0 - at::exp(dc)) * (d.abs() <= kMaxKlLogRatio).to(lp.scalar_type());
          break;
        }
      }
    }

    const at::Tensor lossWeights = aggregationWeights(lossMask, seq, in.numSequences, o.aggregation, n.lossTokens, n);
    const at::Tensor klWeights = aggregationWeights(klMask, seq, in.numSequences, o.aggregation, n.klTokens, n);
    const at::Tensor entropy = in.entropy.defined() ? in.entropy.detach().to(lp.options()) : at::zeros_like(lp);

    const at::Tensor policyTerm = (lossWeights * tokenLoss).sum();
    const at::Tensor klTerm = o.klCoef * (klWeights * kl).sum();
    const at::Tensor entropyTerm = -o.entropyCoef * (lossWeights * entropy).sum();
    value = policyTerm + klTerm + entropyTerm;
    gradLogprobs = (lossWeights * lossGradRatio * ratioGrad + o.klCoef * klWeights * klGrad).to(in.logprobs.scalar_type());
    if (in.entropy.defined()) gradEntropy = (-o.entropyCoef * lossWeights).to(in.entropy.scalar_type());

    const at::Tensor clipped = unclippedActive.logical_not().to(lp.scalar_type());
    // One transfer for every statistic, in OCTO_LOSS_STATS order: no host sync per number.
    statsVector = at::stack({policyTerm, klTerm, entropyTerm, lossMask.sum(), klMask.sum(), (clipped * lossMask).sum(),
                             (dualActive.to(lp.scalar_type()) * lossMask).sum(), (ratio * lossMask).sum(),
                             (kl * klMask).sum(), (entropy * lossMask).sum()})
                      .to(at::kCPU, at::kDouble);
  }
  const double* s = statsVector.data_ptr<double>();
  PolicyLossResult result;
#define OCTO_COUNT_LOSS_STAT(name, comment) +1
  TORCH_CHECK(statsVector.numel() == 0 OCTO_LOSS_STATS(OCTO_COUNT_LOSS_STAT), "policyLoss: one statistic per OCTO_LOSS_STATS entry");
#undef OCTO_COUNT_LOSS_STAT
  size_t next = 0;  // statsVector is in OCTO_LOSS_STATS order
#define OCTO_READ_LOSS_STAT(name, comment) result.stats.name = s[next++];
  OCTO_LOSS_STATS(OCTO_READ_LOSS_STAT)
#undef OCTO_READ_LOSS_STAT
  c10::optional<at::Tensor> entropyInput = in.entropy.defined() ? c10::optional<at::Tensor>(in.entropy) : c10::nullopt;
  c10::optional<at::Tensor> entropyGrad = gradEntropy.defined() ? c10::optional<at::Tensor>(gradEntropy) : c10::nullopt;
  result.loss = AttachGradient::apply(in.logprobs, entropyInput, value, gradLogprobs, entropyGrad);
  return result;
}

at::Tensor policyLossEager(const PolicyLossInputs& in, const PolicyLossOptions& o, const LossNormalizers& n) {
  checkInputs(in, o);
  const at::Tensor& lp = in.logprobs;
  const at::Tensor seq = in.sequenceIds.to(at::kLong);
  const at::Tensor lossMask = in.lossMask.to(lp.options()), klMask = in.klMask.to(lp.options());
  const at::Tensor A = in.advantages.to(lp.options());
  const at::Tensor logRatio = lp - in.oldLogprobs;

  at::Tensor ratio;
  if (o.ratioLevel == RatioLevel::Token) {
    ratio = at::exp(logRatio.clamp(-kMaxLogRatio, kMaxLogRatio));
  } else {
    at::Tensor tokens = at::zeros({in.numSequences}, lp.options()).index_add(0, seq, lossMask);
    at::Tensor logSeqRatio = at::zeros({in.numSequences}, lp.options()).index_add(0, seq, logRatio * lossMask) / tokens.clamp_min(1.0);
    at::Tensor logS = logSeqRatio.clamp(-kMaxLogRatio, kMaxLogRatio).detach().index_select(0, seq);
    ratio = at::exp(logS + lp - lp.detach());
  }
  at::Tensor tokenLoss = at::maximum(-ratio * A, -at::clamp(ratio, 1.0 - o.clipLow, 1.0 + o.clipHigh) * A);
  if (o.dualClip > 0) tokenLoss = at::where(A < 0, at::minimum(tokenLoss, -o.dualClip * A), tokenLoss);

  at::Tensor kl = at::zeros_like(lp);
  if (o.klCoef != 0) {
    at::Tensor d = in.refLogprobs - lp;
    if (o.klEstimator == KlEstimator::K1) kl = -d;
    if (o.klEstimator == KlEstimator::K2) kl = 0.5 * d * d;
    if (o.klEstimator == KlEstimator::K3) {
      d = d.clamp(-kMaxKlLogRatio, kMaxKlLogRatio);
      kl = at::exp(d) - d - 1.0;
    }
  }
  auto aggregate = [&](const at::Tensor& x, const at::Tensor& mask, double tokenCount) -> at::Tensor {
    switch (o.aggregation) {
      case LossAggregation::TokenMean:
        return (x * mask).sum() / std::max(tokenCount, 1.0);
      case LossAggregation::SeqMeanTokenMean: {
        at::Tensor sums = at::zeros({in.numSequences}, lp.options()).index_add(0, seq, x * mask);
        at::Tensor counts = at::zeros({in.numSequences}, lp.options()).index_add(0, seq, mask);
        return (sums / counts.clamp_min(1.0)).sum() / std::max(n.sequences, 1.0);
      }
      case LossAggregation::SeqMeanTokenSum:
        return (x * mask).sum() / std::max(n.sequences, 1.0);
      case LossAggregation::SeqMeanTokenSumNorm:
        return (x * mask).sum() / (std::max(n.sequences, 1.0) * std::max(n.maxLength, 1.0));
    }
    TORCH_CHECK(false, "unknown loss aggregation");
  };
  at::Tensor loss = aggregate(tokenLoss, lossMask, n.lossTokens) + o.klCoef * aggregate(kl, klMask, n.klTokens);
  if (in.entropy.defined() && o.entropyCoef != 0) loss = loss - o.entropyCoef * aggregate(in.entropy, lossMask, n.lossTokens);
  return loss;
}

}  // namespace octo
