// The engine's CPU allocator, and what each device holds.
//
// On CPU, libtorch's allocator is wrapped once, at addon load, by one that
//  - counts the bytes of live tensors, current and peak (what ops.deviceMemory and the benches
//    read), and
//  - keeps freed blocks of 256 KiB and more for reuse by the next allocation of the same size
//    class, up to a byte cap. A fresh large block is fresh pages: glibc maps blocks over 32 MiB
//    anew and trims its heap back to the OS, so every step of a loop faulted its activations and
//    logits in again (a page fault costs microseconds; on a VM, more). Steps repeat their shapes,
//    so after the first one almost every large allocation is a hit.
// On CUDA, the same readings come from libtorch's caching allocator.
#pragma once

#include "core/torch_prelude.h"

namespace octo {

// Installs the CPU allocator (once; later calls do nothing). Tensors allocated before keep their
// own deleters, so installing late is safe; they are just not counted.
void installCpuMemoryTracker();

struct MemoryUse {
  int64_t currentBytes = 0;
  int64_t peakBytes = 0;
  int64_t cachedBytes = 0;  // freed blocks kept for reuse (CUDA: reserved but unallocated)
};
// Bytes of tensors allocated on `device` now and at the peak since the last reset (CUDA: the
// caching allocator's allocated-bytes statistics; CPU: the counting allocator). Blocks kept for
// reuse are not tensors and are not counted. `resetPeak` first resets the peak to the current use.
MemoryUse deviceMemory(at::Device device, bool resetPeak);

// Freed CPU blocks are kept up to OCTO_NATIVE_CPU_CACHE_MB (default 256; 0 turns reuse off).

// While alive, CPU allocations of this thread bypass the block cache, as stock libtorch does:
// the eager baselines of the benches run under it.
class StockCpuAllocation {
 public:
  StockCpuAllocation();
  ~StockCpuAllocation();
  StockCpuAllocation(const StockCpuAllocation&) = delete;
  StockCpuAllocation& operator=(const StockCpuAllocation&) = delete;

 private:
  bool previous_;
};

}  // namespace octo
