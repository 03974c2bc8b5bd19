#include "core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace octo {

namespace {

// Elements of one group of the finiteness check: its temporaries (copies of the weights and both
// moments, and the denominators) hold 4 fp32 values per element, so 4M elements bound them at 16M
// values (64 MiB) whatever the model's size.
constexpr int64_t kCheckGroupElements = int64_t{1} << 22;

// The scalars of one AdamW step t.
struct UpdateScalars {
  double decayFactor;  // 1 - lr * weightDecay on decayed tensors; 1: no decay
  double beta1, beta2, eps;
  double sqrtBiasCorrection2, stepSize;  // sqrt(1 - beta2^t), lr / (1 - beta1^t)
};

// One AdamW update of `params` and the moments, in place (foreach kernels). The commit runs it on
// the real tensors and the finiteness check on copies: one formula for both.
void applyUpdate(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, std::vector<at::Tensor>& m,
                 std::vector<at::Tensor>& v, const std::vector<bool>& decays, const UpdateScalars& s) {
  std::vector<at::Tensor> decayed;
  for (size_t i = 0; i < params.size(); ++i)
    if (decays[i]) decayed.push_back(params[i]);
  if (s.decayFactor != 1.0 && !decayed.empty()) at::_foreach_mul_(decayed, s.decayFactor);
  at::_foreach_mul_(m, s.beta1);
  at::_foreach_add_(m, grads, 1.0 - s.beta1);               // m = b1 m + (1 - b1) g
  at::_foreach_mul_(v, s.beta2);
  at::_foreach_addcmul_(v, grads, grads, 1.0 - s.beta2);    // v = b2 v + (1 - b2) g²
  std::vector<at::Tensor> denominators = at::_foreach_sqrt(v);
  at::_foreach_div_(denominators, s.sqrtBiasCorrection2);
  at::_foreach_add_(denominators, s.eps);                   // sqrt(v / bc2) + eps
  at::_foreach_addcdiv_(params, m, denominators, -s.stepSize);
}

// A factor beyond float32's range would make every weight it scales Inf or NaN; libtorch also
// refuses to convert it for the fp32 kernels (an exception halfway through the update).
bool fitsFloat(double factor) { return std::isfinite(factor) && std::abs(factor) <= std::numeric_limits<float>::max(); }

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.clone());
  return out;
}

// The update, run on copies of `params` and the moments in groups of at most kCheckGroupElements,
// with one device flag per copy (its largest magnitude: NaN or Inf exactly when one of its values
// is) and one host read at the end. The first moment needs no flag: a non-finite one makes the
// weight non-finite. Data-parallel ranks hold the same weights, moments and reduced gradients, so
// they reach the same verdict.
bool updateStaysFinite(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                       const std::vector<at::Tensor>& m, const std::vector<at::Tensor>& v,
                       const std::vector<bool>& decays, const UpdateScalars& scalars) {
  if (!fitsFloat(scalars.decayFactor) || !fitsFloat(scalars.stepSize)) return false;
  const double maxAbs = std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> flags;
  std::vector<at::Tensor> groupParams, groupGrads, groupM, groupV;
  std::vector<bool> groupDecays;
  int64_t groupElements = 0;
  auto checkGroup = [&] {
    if (groupElements == 0) return;
    std::vector<at::Tensor> newParams = clones(groupParams), newM = clones(groupM), newV = clones(groupV);
    applyUpdate(newParams, groupGrads, newM, newV, groupDecays, scalars);
    for (auto* updated : {&newParams, &newV})
      for (at::Tensor& largest : at::_foreach_norm(*updated, maxAbs)) flags.push_back(largest);
    groupParams.clear();
    groupGrads.clear();
    groupM.clear();
    groupV.clear();
    groupDecays.clear();
    groupElements = 0;
  };
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t numel = params[i].numel();
    const at::Tensor flatParam = params[i].reshape({-1}), flatGrad = grads[i].reshape({-1});
    const at::Tensor flatM = m[i].reshape({-1}), flatV = v[i].reshape({-1});
    for (int64_t start = 0; start < numel;) {
      const int64_t length = std::min(numel - start, kCheckGroupElements - groupElements);
      groupParams.push_back(flatParam.narrow(0, start, length));
      groupGrads.push_back(flatGrad.narrow(0, start, length));
      groupM.push_back(flatM.narrow(0, start, length));
      groupV.push_back(flatV.narrow(0, start, length));
      groupDecays.push_back(decays[i]);
      groupElements += length;
      start += length;
      if (groupElements == kCheckGroupElements) checkGroup();
    }
  }
  checkGroup();
  if (flags.empty()) return true;
  return at::stack(flags).isfinite().all().item<bool>();
}

// Values below this leave room for the rounding of every kernel of the update (a factor 8 of margin).
constexpr double kSafeMagnitude = std::numeric_limits<float>::max() / 8;

// max |x| over `tensors` (one read pass, one host read); NaN when any value is NaN.
double largestMagnitude(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return 0.0;
  return at::stack(at::_foreach_norm(tensors, std::numeric_limits<double>::infinity())).max().item<double>();
}

// A bound that proves the update finite, so that the exact check (about twice the update's own
// cost) runs only when the bound cannot: a learning rate or a gradient far out of range.
//  - Every |g| is at most the global gradient norm.
//  - v' ≤ b2·V + (1 − b2)·G², with V = `maxSecondMoment` ≥ max v kept on the host by AdamW (the
//    moments change only in step() and restore()).
//  - |m|/√v ≤ (1 − b1)/√(1 − b2) · 1/√(1 − b1²/b2) (Cauchy–Schwarz over the gradient history, both
//    moments from zero), so |update| ≤ lr/bc1 · √bc2 · that, whatever eps (tiny v: below).
//  - |p'| ≤ max(|1 − lr·wd|, 1)·max|p| + |update|, with max|p| read each step: the weights are
//    also written outside the optimizer (a resume, the data-parallel broadcast).
bool updateProvablyFinite(const std::vector<at::Tensor>& params, double gradNormBound, const UpdateScalars& s, double maxSecondMoment,
                          double* nextMaxSecondMoment) {
  const double b1 = s.beta1, b2 = s.beta2;
  const double gamma = b1 * b1 / b2;
  if (!(gamma < 1) || !std::isfinite(gradNormBound) || !fitsFloat(s.decayFactor) || !fitsFloat(s.stepSize)) return false;
  const double gradSquared = gradNormBound * gradNormBound;
  *nextMaxSecondMoment = b2 * maxSecondMoment + (1 - b2) * gradSquared;
  if (!(gradSquared < kSafeMagnitude) || !(*nextMaxSecondMoment < kSafeMagnitude)) return false;
  const double ratioBound = (1 - b1) / std::sqrt(1 - b2) / std::sqrt(1 - gamma);
  // Where v is below float's normal range its rounding voids the ratio bound, but there every
  // past |g|, and so |m|, is below √(FLT_MIN / (1 − b2)), and the denominator is at least eps.
  const double smallMomentBound = std::sqrt(std::numeric_limits<float>::min() / (1 - b2)) / s.eps;
  const double updateBound = s.stepSize * std::max(s.sqrtBiasCorrection2 * ratioBound, smallMomentBound);
  const double weightBound = std::max(std::abs(s.decayFactor), 1.0) * largestMagnitude(params) + updateBound;
  return weightBound < kSafeMagnitude;
}

}  // namespace

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const auto& p : params_) {
    TORCH_CHECK(p.scalar_type() == at::kFloat, "AdamW keeps fp32 master weights; got a ", p.scalar_type(), " parameter");
    expAvg_.push_back(at::zeros_like(p));
    expAvgSq_.push_back(at::zeros_like(p));
    decays_.push_back(p.dim() >= 2);  // norms and biases are not decayed
  }
}

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options, std::vector<bool> decays)
    : AdamW(std::move(params), options) {
  TORCH_CHECK(decays.size() == params_.size(), "AdamW: one decay flag per parameter");
  decays_ = std::move(decays);
}

bool AdamW::step(double lr, double gradNormBound, const std::function<bool(bool)>& agree) {
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> params, grads, m, v;
  std::vector<bool> decays;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& grad = params_[i].grad();
    if (!grad.defined()) continue;  // a parameter that took no part in the loss keeps its state
    params.push_back(params_[i]);
    grads.push_back(grad);
    m.push_back(expAvg_[i]);
    v.push_back(expAvgSq_[i]);
    decays.push_back(decays_[i]);
  }
  const double t = static_cast<double>(steps_ + 1);
  UpdateScalars scalars;
  scalars.decayFactor = options_.weightDecay != 0 ? 1.0 - lr * options_.weightDecay : 1.0;
  scalars.beta1 = options_.beta1;
  scalars.beta2 = options_.beta2;
  scalars.eps = options_.eps;
  scalars.sqrtBiasCorrection2 = std::sqrt(1.0 - std::pow(options_.beta2, t));
  scalars.stepSize = lr / (1.0 - std::pow(options_.beta1, t));
  double nextMaxSecondMoment = 0;
  const bool proven = updateProvablyFinite(params, gradNormBound, scalars, maxSecondMoment_, &nextMaxSecondMoment);
  bool finite = proven || updateStaysFinite(params, grads, m, v, decays, scalars);
  if (agree) finite = agree(finite);
  if (!finite) return false;
  ++steps_;
  if (!params.empty()) applyUpdate(params, grads, m, v, decays, scalars);
  // After an exactly checked update the host bound is re-read (it may have been out of range).
  maxSecondMoment_ = proven ? nextMaxSecondMoment : largestMagnitude(expAvgSq_);
  return true;
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
  maxSecondMoment_ = largestMagnitude(expAvgSq_);
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
