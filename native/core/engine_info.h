// What this build of the engine runs on: versions, devices, build flags (for `octo-native info`).
#pragma once

#include "core/torch_prelude.h"

namespace octo {

struct EngineInfo {
  std::string torchVersion;
  bool cudaAvailable = false;
  int64_t cudaDeviceCount = 0;
  bool scaledDotProductAttention = false;
  // Optional features built in: "sdpa", "sdpa-gqa" (from the libtorch version), and what
  // CMakeLists.txt's probes found: "cuda-graphs", "gemm-out-dtype", "gloo", "nccl".
  std::vector<std::string> features;
  int64_t threads = 0;
  std::string parallelInfo;
  std::string buildConfig;
};

EngineInfo engineInfo();

// "cpu" / "cuda" / "cuda:1" / "auto" (CUDA when present, else CPU).
at::Device parseDevice(const std::string& name);
// The compute dtype for a device: bf16 on CUDA, fp32 on CPU; "float32"/"bfloat16"/"float16" force one.
at::ScalarType computeDtype(at::Device device, const std::string& requested);

}  // namespace octo
