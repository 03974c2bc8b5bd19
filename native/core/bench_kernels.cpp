#include "core/bench_kernels.h"

#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

double timeFileRead(const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, "cannot open '", path, "'");
  struct stat st {};
  ::fstat(fd, &st);
  at::Tensor buffer = at::empty({static_cast<int64_t>(st.st_size)}, at::kByte);
  auto* dst = static_cast<char*>(buffer.data_ptr());
  int64_t done = 0;
  while (done < st.st_size) {
    const ssize_t n = ::pread(fd, dst + done, static_cast<size_t>(st.st_size - done), done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += n;
  }
  ::close(fd);
  TORCH_CHECK(done == st.st_size, "short read of '", path, "'");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace octo
