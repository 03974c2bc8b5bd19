#include "core/memory_tracker.h"

#include <atomic>
#include <c10/core/CPUAllocator.h>
#include <mutex>
#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace octo {

namespace {

std::atomic<int64_t> currentBytes{0};
std::atomic<int64_t> peakBytes{0};

struct Allocation {
  void* data;
  int64_t bytes;
  c10::DataPtr inner;
};

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  // libtorch 2.3 dropped allocate()'s const and made copy_data() pure virtual (pytorch PR
  // #120969; c10/core/Allocator.h): the 1.13 form would override nothing there.
#if OCTO_TORCH_AT_LEAST(2, 3)
  c10::DataPtr allocate(size_t bytes) override {
#else
  c10::DataPtr allocate(size_t bytes) const override {
#endif
    c10::DataPtr innerPtr = inner_->allocate(bytes);
    void* data = innerPtr.get();
    const c10::Device device = innerPtr.device();
    const int64_t now = currentBytes += static_cast<int64_t>(bytes);
    int64_t peak = peakBytes.load();
    while (now > peak && !peakBytes.compare_exchange_weak(peak, now)) {
    }
    auto* allocation = new Allocation{data, static_cast<int64_t>(bytes), std::move(innerPtr)};
    return {data, allocation, &release, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
#if OCTO_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif

 private:
  static void release(void* context) {
    auto* allocation = static_cast<Allocation*>(context);
    currentBytes -= allocation->bytes;
    delete allocation;  // frees through the inner allocator's DataPtr
  }

  c10::Allocator* inner_;
};

}  // namespace

void installCpuMemoryTracker() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CountingAllocator allocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
  });
}

MemoryUse deviceMemory(at::Device device, bool resetPeak) {
  if (device.is_cpu()) {
    installCpuMemoryTracker();
    if (resetPeak) peakBytes = currentBytes.load();
    return {currentBytes.load(), peakBytes.load()};
  }
#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
  if (device.is_cuda()) {
    namespace allocator = c10::cuda::CUDACachingAllocator;
    const auto index = device.has_index() ? device.index() : static_cast<c10::DeviceIndex>(0);
    if (resetPeak) allocator::resetPeakStats(index);
    // Entry 0 is StatType::AGGREGATE (all pools); the enum's namespace moved between versions.
    const auto& bytes = allocator::getDeviceStats(index).allocated_bytes[0];
    return {bytes.current, bytes.peak};
  }
#endif
  TORCH_CHECK(false, "memory statistics are kept for cpu and cuda devices, not ", device);
}

}  // namespace octo
