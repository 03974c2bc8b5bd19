#include "core/engine_info.h"

#include "core/device_thread.h"

#include <algorithm>

#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>

namespace octo {

EngineInfo engineInfo() {
  EngineInfo info;
  info.torchVersion = TORCH_VERSION;
  info.cudaAvailable = at::hasCUDA();
  info.cudaDeviceCount = info.cudaAvailable ? at::detail::getCUDAHooks().getNumGPUs() : 0;
  info.scaledDotProductAttention = OCTO_HAS_SDPA;
  if (OCTO_HAS_SDPA) info.features.push_back("sdpa");
  if (OCTO_HAS_SDPA_GQA) info.features.push_back("sdpa-gqa");
  const std::string probed = OCTO_BUILD_FEATURES;  // comma-separated, from CMakeLists.txt
  for (size_t start = 0; start < probed.size();) {
    const size_t comma = std::min(probed.find(',', start), probed.size());
    info.features.push_back(probed.substr(start, comma - start));
    start = comma + 1;
  }
  info.threads = DeviceThread::intraOpThreads();
  info.parallelInfo = at::get_parallel_info();
  info.buildConfig = at::show_config();
  return info;
}

at::Device parseDevice(const std::string& name) {
  if (name == "auto" || name.empty()) return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  at::Device device(name);  // throws c10::Error on a malformed name
  TORCH_CHECK(!device.is_cuda() || at::hasCUDA(), "device '", name,
              "' was asked for but this libtorch has no CUDA device; use --device cpu");
  return device;
}

at::ScalarType computeDtype(at::Device device, const std::string& requested) {
  if (requested == "float32") return at::kFloat;
  if (requested == "bfloat16") return at::kBFloat16;
  if (requested == "float16") return at::kHalf;
  TORCH_CHECK(requested.empty() || requested == "auto", "unknown dtype '", requested,
              "' (use auto, float32, bfloat16 or float16)");
  return device.is_cuda() ? at::kBFloat16 : at::kFloat;
}

}  // namespace octo
