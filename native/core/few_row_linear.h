// y = x Wᵀ + b for the few rows of a decode step, without BLAS.
//
// A decode step of a few live samples multiplies a handful of rows by every weight matrix, so it
// is bound by reading the weights. OpenBLAS's sgemm packs the weight panel on every call; this
// kernel reads each weight row once and takes all the rows' dot products from cache.
// Measured on this project's 2-core CPU machine, quiet, 2 threads (BLAS / this kernel): a
// 32000 x 512 LM head at 1 row 9.8 / 7.0 ms, at 4 rows 12.5 / 9.7 ms, at 8 rows 13.8 / 14.1 ms,
// at 16 rows 15.2 / 23.4 ms; 1536 x 512 at 4 rows 0.48 / 0.32 ms. Under CPU contention BLAS's
// threads degrade far more (8 rows: ~30 ms against ~15 ms), but the limit is set for a quiet machine.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

// Rows of x up to which fewRowLinear beats BLAS (measured above: it wins at 4, breaks even at 8).
constexpr int64_t kFewRows = 4;

// True when fewRowLinear applies: CPU, fp32, no gradient wanted, at most kFewRows rows.
bool fewRowLinearApplies(const at::Tensor& x, const at::Tensor& weight);

// x [..., C], weight [N, C], bias [N] or undefined -> [..., N]. Each output is one fixed-order
// sum over C, so a row's result does not depend on which other rows share the call.
at::Tensor fewRowLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// at::linear, or fewRowLinear where it applies.
inline at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {}) {
  return fewRowLinearApplies(x, weight) ? fewRowLinear(x, weight, bias) : at::linear(x, weight, bias);
}

}  // namespace octo
