#include "core/bench_kernels.h"

#include <chrono>

namespace octo {

namespace {
void synchronize(at::Device device) {
  // A tiny device-to-host copy waits for all queued kernels without needing CUDA headers.
  if (device.is_cuda()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}
}  // namespace

double timeMatmul(int64_t m, int64_t k, int64_t n, int64_t iterations, at::Device device, at::ScalarType dtype) {
  c10::InferenceMode inference;
  const auto options = at::TensorOptions().device(device).dtype(dtype);
  at::Tensor a = at::randn({m, k}, options), b = at::randn({k, n}, options);
  at::Tensor out = at::matmul(a, b);
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) at::matmul_out(out, a, b);
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / static_cast<double>(iterations);
}

}  // namespace octo
