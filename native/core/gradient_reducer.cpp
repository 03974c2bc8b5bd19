#include "core/gradient_reducer.h"

#include <chrono>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace octo {

struct GradientReducer::AccumulatorHooks {
  // Kept alive so the same node, with our hook, serves every backward.
  std::vector<decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()))> nodes;
  std::vector<uintptr_t> keys;
};

GradientReducer::GradientReducer(std::shared_ptr<DistributedGroup> group, std::vector<at::Tensor> params,
                                 GradientReducerOptions options)
    : group_(std::move(group)), params_(std::move(params)), options_(options), bucketOf_(params_.size()),
      slotOf_(params_.size()) {
  TORCH_CHECK(options_.bucketBytes > 0, "the gradient bucket size must be positive");
  const auto floats = at::TensorOptions().device(group_->device()).dtype(at::kFloat);
  // Reverse order: the LM head and the last layers get their gradients first in backward.
  Bucket current;
  int64_t numel = 0;
  auto close = [&]() {
    current.flat = at::empty({numel}, floats);
    buckets_.push_back(std::move(current));
    current = Bucket();
    numel = 0;
  };
  for (size_t k = params_.size(); k-- > 0;) {
    current.params.push_back(k);
    current.offsets.push_back(numel);
    bucketOf_[k] = buckets_.size();
    slotOf_[k] = current.params.size() - 1;
    numel += params_[k].numel();
    if (numel * 4 >= options_.bucketBytes) close();
  }
  if (!current.params.empty()) close();
  if (options_.mainGradients) zeroMainGradients();

  if (!options_.overlapBackward) return;
  hooks_ = std::make_unique<AccumulatorHooks>();
  for (size_t k = 0; k < params_.size(); ++k) {
    TORCH_CHECK(params_[k].requires_grad(), "data-parallel training needs trainable parameters");
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[k]);
    // Runs after the gradient has been added into params_[k].grad(): on the armed (last)
    // backward of a step nothing will add to it any more.
    hooks_->keys.push_back(accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (armed_) onGradientFinal(k);
          return outputs;
        })));
    hooks_->nodes.push_back(std::move(accumulator));
  }
}

GradientReducer::~GradientReducer() {
  if (!hooks_) return;
  for (size_t k = 0; k < hooks_->nodes.size(); ++k) hooks_->nodes[k]->del_post_hook(hooks_->keys[k]);
}

void GradientReducer::arm() {
  if (!options_.overlapBackward) return;
  armed_ = true;
  nextBucket_ = 0;
  launchedDuringBackward_ = 0;
  for (auto& bucket : buckets_) bucket.pending = static_cast<int64_t>(bucket.params.size());
}

void GradientReducer::onGradientFinal(size_t param) {
  --buckets_[bucketOf_[param]].pending;
  launchReadyInOrder();
}

void GradientReducer::launchReadyInOrder() {
  while (nextBucket_ < buckets_.size() && buckets_[nextBucket_].pending == 0) {
    launch(buckets_[nextBucket_++]);
    ++launchedDuringBackward_;
  }
}

void GradientReducer::foldIn(size_t k) {
  TORCH_CHECK(options_.mainGradients, "foldIn() is for a reducer that holds the main gradients");
  const at::Tensor& grad = params_[k].grad();
  if (!grad.defined()) return;
  at::NoGradGuard noGrad;
  const Bucket& bucket = buckets_[bucketOf_[k]];
  bucket.flat.narrow(0, bucket.offsets[slotOf_[k]], params_[k].numel()).add_(grad.reshape({-1}));
  folded_[k] = true;
}

void GradientReducer::zeroMainGradients() {
  for (auto& bucket : buckets_) bucket.flat.zero_();
  folded_.assign(params_.size(), false);
}

void GradientReducer::launch(Bucket& bucket) {
  at::NoGradGuard noGrad;
  for (size_t j = 0; j < bucket.params.size(); ++j) {
    const size_t k = bucket.params[j];
    if (options_.mainGradients) {
      foldIn(k);  // the last micro-batch's share; the earlier ones are in already
      continue;
    }
    const at::Tensor& param = params_[k];
    at::Tensor slot = bucket.flat.narrow(0, bucket.offsets[j], param.numel());
    if (param.grad().defined()) slot.copy_(param.grad().reshape({-1}));
    else slot.zero_();
  }
  bucket.work = group_->allReduceAsync(bucket.flat);
}

ReduceReport GradientReducer::finish(const std::vector<at::Tensor>& targets) {
  TORCH_CHECK(targets.size() == params_.size(), "finish() needs one target per parameter");
  const auto start = std::chrono::steady_clock::now();
  ReduceReport report;
  report.bucketsDuringBackward = armed_ ? launchedDuringBackward_ : 0;
  if (!armed_) nextBucket_ = 0;
  armed_ = false;
  while (nextBucket_ < buckets_.size()) launch(buckets_[nextBucket_++]);
  nextBucket_ = 0;

  // Which parameters have a gradient on some rank (one small collective after the buckets).
  at::Tensor present = at::empty({static_cast<int64_t>(params_.size())}, at::TensorOptions().dtype(at::kFloat).device(group_->device()));
  {
    at::Tensor flags = at::empty({static_cast<int64_t>(params_.size())}, at::kFloat);
    auto* f = flags.data_ptr<float>();
    for (size_t k = 0; k < params_.size(); ++k)
      f[k] = (options_.mainGradients ? folded_[k] : params_[k].grad().defined()) ? 1.0f : 0.0f;
    present.copy_(flags);
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    group_->wait(buckets_[b].work, "the gradient all-reduce (bucket " + std::to_string(b + 1) + " of " +
                                      std::to_string(buckets_.size()) + ")");
    buckets_[b].work.reset();
    report.bytes += buckets_[b].flat.numel() * 4;
  }
  std::vector<at::Tensor> presence{present};
  group_->allReduce(presence, ReduceOp::Sum, "the gradient presence all-reduce");
  const at::Tensor presentOnSomeRank = present.cpu();
  const float* anywhere = presentOnSomeRank.data_ptr<float>();

  at::NoGradGuard noGrad;
  for (const auto& bucket : buckets_) {
    for (size_t j = 0; j < bucket.params.size(); ++j) {
      const size_t k = bucket.params[j];
      at::Tensor target = targets[k];
      if (anywhere[k] == 0) {
        target.mutable_grad() = at::Tensor();
        continue;
      }
      // A view into the bucket: the optimizer step reads it before the next backward refills it.
      target.mutable_grad() = bucket.flat.narrow(0, bucket.offsets[j], target.numel()).view(target.sizes());
    }
  }
  report.buckets = static_cast<int64_t>(buckets_.size());
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace octo
