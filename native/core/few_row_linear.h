// y = x Wᵀ + b for the few rows of a decode step, without BLAS.
//
// A decode step multiplies a handful of rows (one per live sample) by every weight matrix, so it
// is bound by reading the weights. OpenBLAS's sgemm packs the weight panel for each call and,
// at 8 rows, reads and writes each weight byte about three times: ~3x the time of one pass
// (measured on this project's 2-core CPU machine: 28 ms against 8 ms for a 32000 x 512 LM head).
// This kernel reads each weight row once and takes all the rows' dot products from cache.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

// Rows of x up to which fewRowLinear beats BLAS (measured; see bench/).
constexpr int64_t kFewRows = 16;

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
