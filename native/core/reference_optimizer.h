// libtorch's own AdamW (C++ frontend, torch::optim::AdamW): the reference our foreach AdamW
// is tested against. Kept in its own file because the frontend headers are heavy to compile.
#pragma once

#include "core/optimizer.h"

namespace octo {

// Runs `lrs.size()` steps from `initial` with gradients grads[step][param] and returns the
// final parameters. `useReference` picks libtorch's AdamW, otherwise ours.
std::vector<at::Tensor> runAdamW(const std::vector<at::Tensor>& initial, const std::vector<std::vector<at::Tensor>>& grads,
                                 const std::vector<double>& lrs, const AdamWOptions& options, bool useReference);

}  // namespace octo
