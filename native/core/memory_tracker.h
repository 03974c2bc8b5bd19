// Counts the bytes of CPU memory libtorch holds, current and peak, by wrapping its CPU
// allocator; on CUDA, reads the same from libtorch's caching allocator. The loss bench reads
// the peak of the fused op and of the eager formula.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

// Installs the counting allocator once (later calls do nothing). Tensors allocated before
// keep their own deleters, so installing late is safe; they are just not counted.
void installCpuMemoryTracker();

struct MemoryUse {
  int64_t currentBytes = 0;
  int64_t peakBytes = 0;
};
// Bytes of tensors allocated on `device` now and at the peak since the last reset (CUDA: the
// caching allocator's allocated-bytes statistics; CPU: the counting allocator, installed by
// the first call). `resetPeak` first resets the peak to the current use.
MemoryUse deviceMemory(at::Device device, bool resetPeak);

}  // namespace octo
