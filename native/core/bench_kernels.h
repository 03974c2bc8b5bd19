// Reference kernels timed by the benches as same-run baselines (bench/*.ts).
#pragma once

#include "core/logprobs.h"
#include "core/torch_prelude.h"

namespace octo {

// Seconds per [m, k] x [k, n] matmul in `dtype` on `device`, averaged over `iterations`
// after one warm-up: the GEMM rate that bounds a forward pass of the same shapes.
double timeMatmul(int64_t m, int64_t k, int64_t n, int64_t iterations, at::Device device, at::ScalarType dtype);

// Seconds to read all of `path` into newly allocated memory with pread: the floor for a
// checkpoint loader, which must also fault in fresh pages for the weights it returns.
double timeFileRead(const std::string& path);

struct LossBenchResult {
  double seconds = 0;        // forward + backward, mean over iterations
  int64_t peakBytes = -1;    // peak CPU bytes above what was held before (-1: not measured on this device)
  double loss = 0;
  LogprobsPlan plan;         // the fused op's plan (eager: a default one)
};

// Token log-probs + policy loss (+ backward) at [tokens x hidden] hidden states and a
// [vocab x hidden] LM head: the chunked, fused path or the eager formula on full logits.
// `lmHeadGrad` false keeps the LM head frozen, isolating the memory that scales with tokens.
// chunkSize 0: the fused op plans its chunks from its default memory budget.
LossBenchResult benchPolicyLoss(int64_t tokens, int64_t hidden, int64_t vocab, int64_t chunkSize, bool eager,
                                bool lmHeadGrad, int64_t iterations, at::Device device);

}  // namespace octo
