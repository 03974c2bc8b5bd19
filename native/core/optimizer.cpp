#include "core/optimizer.h"

#include <cmath>

namespace octo {

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const auto& p : params_) {
    TORCH_CHECK(p.scalar_type() == at::kFloat, "AdamW keeps fp32 master weights; got a ", p.scalar_type(), " parameter");
    expAvg_.push_back(at::zeros_like(p));
    expAvgSq_.push_back(at::zeros_like(p));
    decays_.push_back(p.dim() >= 2);  // norms and biases are not decayed
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> params, grads, m, v, decayed;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& grad = params_[i].grad();
    if (!grad.defined()) continue;  // a parameter that took no part in the loss keeps its state
    params.push_back(params_[i]);
    grads.push_back(grad);
    m.push_back(expAvg_[i]);
    v.push_back(expAvgSq_[i]);
    if (decays_[i]) decayed.push_back(params_[i]);
  }
  ++steps_;
  if (params.empty()) return;
  const double b1 = options_.beta1, b2 = options_.beta2;
  if (options_.weightDecay != 0 && !decayed.empty()) at::_foreach_mul_(decayed, 1.0 - lr * options_.weightDecay);
  at::_foreach_mul_(m, b1);
  at::_foreach_add_(m, grads, 1.0 - b1);               // m = b1 m + (1 - b1) g
  at::_foreach_mul_(v, b2);
  at::_foreach_addcmul_(v, grads, grads, 1.0 - b2);    // v = b2 v + (1 - b2) g²
  const double biasCorrection1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double biasCorrection2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  std::vector<at::Tensor> denominators = at::_foreach_sqrt(v);
  at::_foreach_div_(denominators, std::sqrt(biasCorrection2));
  at::_foreach_add_(denominators, options_.eps);       // sqrt(v / bc2) + eps
  at::_foreach_addcdiv_(params, m, denominators, -lr / biasCorrection1);
}

void AdamW::restore(int64_t steps, const std::vector<at::Tensor>& firstMoments, const std::vector<at::Tensor>& secondMoments) {
  TORCH_CHECK(firstMoments.size() == params_.size() && secondMoments.size() == params_.size(),
              "optimizer state has ", firstMoments.size(), " moments for ", params_.size(), " parameters");
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < params_.size(); ++i) {
    TORCH_CHECK(firstMoments[i].sizes() == params_[i].sizes() && secondMoments[i].sizes() == params_[i].sizes(),
                "optimizer state for parameter ", i, " has shape ", firstMoments[i].sizes(), ", expected ", params_[i].sizes());
    expAvg_[i].copy_(firstMoments[i]);
    expAvgSq_[i].copy_(secondMoments[i]);
  }
  steps_ = steps;
}

double clipGradNorm(const std::vector<at::Tensor>& params, double maxNorm) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  const double total = at::stack(norms).to(at::kDouble).norm().item<double>();
  if (maxNorm > 0 && std::isfinite(total) && total > maxNorm) at::_foreach_mul_(grads, maxNorm / (total + 1e-6));
  return total;
}

}  // namespace octo
