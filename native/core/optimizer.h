// AdamW with decoupled weight decay on >= 2-D weights only, global-norm gradient clipping,
// and fp32 master weights for models that compute in bf16/fp16 (docs/methods.md §2).
#pragma once

#include <functional>
#include <limits>

#include "core/torch_prelude.h"

namespace octo {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 0.01;  // decoupled: p <- p * (1 - lr * weightDecay), on >= 2-D weights only
};

class AdamW {
 public:
  // `params` are the tensors that are updated (fp32 masters); their .grad() is read.
  AdamW(std::vector<at::Tensor> params, AdamWOptions options);
  // `decays[i]` says whether params[i] is decayed: sharded training passes flat slices of the
  // weights, whose own dimension says nothing.
  AdamW(std::vector<at::Tensor> params, AdamWOptions options, std::vector<bool> decays);

  // One update with learning rate `lr` using the current gradients (foreach kernels). Returns
  // false, and changes nothing (weights, moments, step count), when the update would make a
  // weight or a second moment NaN or Inf: the caller counts the step as skipped.
  // `gradNormBound` (the global gradient norm, or anything above it) lets a cheap bound prove
  // the update finite; without it every step is checked exactly. `agree` (sharded training) turns
  // this rank's verdict into every rank's, so all of them update or none does.
  bool step(double lr, double gradNormBound = std::numeric_limits<double>::infinity(),
            const std::function<bool(bool)>& agree = {});
  int64_t steps() const { return steps_; }
  const AdamWOptions& options() const { return options_; }

  // Optimizer state in parameter order (for checkpoints).
  const std::vector<at::Tensor>& firstMoments() const { return expAvg_; }
  const std::vector<at::Tensor>& secondMoments() const { return expAvgSq_; }
  void restore(int64_t steps, const std::vector<at::Tensor>& firstMoments, const std::vector<at::Tensor>& secondMoments);

 private:
  std::vector<at::Tensor> params_, expAvg_, expAvgSq_;
  std::vector<bool> decays_;
  AdamWOptions options_;
  int64_t steps_ = 0;
  double maxSecondMoment_ = 0;  // ≥ every value of expAvgSq_ (0 at the start: the moments are zeros)
};

// Global L2 norm of the gradients of `params` (undefined grads count as zero). When
// maxNorm > 0 and the norm exceeds it, gradients are scaled by maxNorm / norm. A non-finite
// norm is returned as is and nothing is scaled: the caller decides to skip the step.
double clipGradNorm(const std::vector<at::Tensor>& params, double maxNorm);

}  // namespace octo
