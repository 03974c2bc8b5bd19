#include "core/memory_tracker.h"

#include <atomic>
#include <c10/core/CPUAllocator.h>
#include <mutex>

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

  c10::DataPtr allocate(size_t bytes) const override {
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

int64_t resetCpuPeakBytes() {
  peakBytes = currentBytes.load();
  return currentBytes.load();
}

int64_t cpuPeakBytes() { return peakBytes.load(); }
int64_t cpuCurrentBytes() { return currentBytes.load(); }

}  // namespace octo
