// The precompiled header of the native build: the heavy ATen include every core file needs.
// Keep it to ATen (not <torch/torch.h>): the full C++ frontend doubles compile time and memory.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/api/include/torch/version.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

// libtorch 2.x has scaled-dot-product attention (flash on Hopper); 1.13 (Debian) does not.
#if TORCH_VERSION_MAJOR >= 2
#define OCTO_HAS_SDPA 1
#else
#define OCTO_HAS_SDPA 0
#endif
