// Reference kernels timed by the benches as same-run baselines (bench/*.ts).
#pragma once

#include "core/torch_prelude.h"

namespace octo {

// Seconds per [m, k] x [k, n] matmul in `dtype` on `device`, averaged over `iterations`
// after one warm-up: the GEMM rate that bounds a forward pass of the same shapes.
double timeMatmul(int64_t m, int64_t k, int64_t n, int64_t iterations, at::Device device, at::ScalarType dtype);

// Seconds to read all of `path` into newly allocated memory with pread: the floor for a
// checkpoint loader, which must also fault in fresh pages for the weights it returns.
double timeFileRead(const std::string& path);

}  // namespace octo
