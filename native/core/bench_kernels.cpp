#include "core/bench_kernels.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/logprobs.h"
#include "core/memory_tracker.h"
#include "core/policy_loss.h"

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

LossBenchResult benchPolicyLoss(int64_t tokens, int64_t hidden, int64_t vocab, int64_t chunkSize, bool eager,
                                bool lmHeadGrad, int64_t iterations, at::Device device) {
  installCpuMemoryTracker();
  const auto options = at::TensorOptions().device(device).dtype(device.is_cuda() ? at::kBFloat16 : at::kFloat);
  at::Generator generator = at::detail::createCPUGenerator(0);
  at::Tensor h = at::randn({tokens, hidden}, generator).to(options).requires_grad_(true);
  at::Tensor w = (at::randn({vocab, hidden}, generator) * 0.02).to(options).requires_grad_(lmHeadGrad);
  at::Tensor targets = at::randint(vocab, {tokens}, generator).to(device);
  PolicyLossInputs in;
  in.oldLogprobs = (at::randn({tokens}, generator) * 0.1 - 12.0).to(device);
  in.refLogprobs = (at::randn({tokens}, generator) * 0.1 - 12.0).to(device);
  in.advantages = at::randn({tokens}, generator).to(device);
  in.lossMask = at::ones({tokens}, at::TensorOptions().device(device));
  in.klMask = in.lossMask;
  in.sequenceIds = at::div(at::arange(tokens, at::kLong), std::max<int64_t>(tokens / 8, 1), "floor").to(device);
  in.numSequences = in.sequenceIds.max().item<int64_t>() + 1;
  PolicyLossOptions lossOptions;
  lossOptions.klCoef = 0.01;
  LossNormalizers normalizers;
  normalizers.lossTokens = normalizers.klTokens = static_cast<double>(tokens);
  normalizers.sequences = static_cast<double>(in.numSequences);
  TokenLogprobsOptions lpOptions;
  lpOptions.chunkSize = chunkSize;

  LossBenchResult result;
  auto run = [&]() {
    h.mutable_grad() = at::Tensor();
    w.mutable_grad() = at::Tensor();
    TokenLogprobs lp = eager ? tokenLogprobsEager(h, w, targets, lpOptions) : tokenLogprobs(h, w, targets, lpOptions);
    in.logprobs = lp.logprobs;
    result.plan = lp.plan;
    at::Tensor loss = eager ? policyLossEager(in, lossOptions, normalizers) : policyLoss(in, lossOptions, normalizers).loss;
    loss.backward();
    in.logprobs = at::Tensor();
    result.loss = loss.item<double>();
  };
  run();  // warm-up (allocator caches, lazy init)
  synchronize(device);
  h.mutable_grad() = at::Tensor();
  w.mutable_grad() = at::Tensor();
  const int64_t before = deviceMemory(device, /*resetPeak=*/true).currentBytes;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) run();
  synchronize(device);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / static_cast<double>(iterations);
  result.peakBytes = deviceMemory(device, /*resetPeak=*/false).peakBytes - before;
  return result;
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
