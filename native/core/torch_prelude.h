// The precompiled header of the native build: the heavy ATen include every core file needs.
// Keep it to ATen (not <torch/torch.h>): the full C++ frontend doubles compile time and memory.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard: no longer pulled in by ATen.h in 2.13
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/api/include/torch/version.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

// Version guards: libtorch's own TORCH_VERSION_* macros (torch/version.h, generated per build).
#define OCTO_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// libtorch 2.x has at::scaled_dot_product_attention; 1.13 (Debian) does not, and attention is
// computed by hand there (model.cpp). SDPA picks its kernel per call: flash attention only
// when no explicit mask is passed (is_causal), so right-padded batches go without one.
#define OCTO_HAS_SDPA OCTO_TORCH_AT_LEAST(2, 0)
// enable_gqa (2.5): key/value heads shared by query groups without expanding K/V.
#define OCTO_HAS_SDPA_GQA OCTO_TORCH_AT_LEAST(2, 5)
