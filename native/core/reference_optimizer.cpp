#include "core/reference_optimizer.h"

#include <torch/optim/adamw.h>

namespace octo {

std::vector<at::Tensor> runAdamW(const std::vector<at::Tensor>& initial, const std::vector<std::vector<at::Tensor>>& grads,
                                 const std::vector<double>& lrs, const AdamWOptions& options, bool useReference) {
  TORCH_CHECK(grads.size() == lrs.size(), "runAdamW: one gradient set per learning rate");
  std::vector<at::Tensor> params;
  for (const auto& p : initial) params.push_back(p.detach().clone().to(at::kFloat));
  if (useReference) {
    // libtorch decays every parameter it is given: give it two groups, as users of
    // torch.optim.AdamW do, so that 1-D weights are not decayed.
    std::vector<at::Tensor> decayed, plain;
    for (auto& p : params) (p.dim() >= 2 ? decayed : plain).push_back(p);
    auto groupOptions = [&](double weightDecay) {
      auto o = std::make_unique<torch::optim::AdamWOptions>(lrs.empty() ? 1e-3 : lrs[0]);
      o->betas({options.beta1, options.beta2}).eps(options.eps).weight_decay(weightDecay);
      return o;
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decayed, groupOptions(options.weightDecay));
    groups.emplace_back(plain, groupOptions(0.0));
    torch::optim::AdamW optimizer(groups, torch::optim::AdamWOptions());
    for (size_t s = 0; s < lrs.size(); ++s) {
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = grads[s][i].to(at::kFloat).clone();
      for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lrs[s]);
      optimizer.step();
    }
  } else {
    AdamW optimizer(params, options);
    for (size_t s = 0; s < lrs.size(); ++s) {
      for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = grads[s][i].to(at::kFloat).clone();
      optimizer.step(lrs[s], clipGradNorm(params, 0));  // the norm, as the trainer passes it (0: no clipping)
    }
  }
  std::vector<at::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach());
  return out;
}

}  // namespace octo
