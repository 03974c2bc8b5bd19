#include "core/memory_tracker.h"

#include <atomic>
#include <c10/core/CPUAllocator.h>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace octo {

namespace {

std::atomic<int64_t> currentBytes{0};
std::atomic<int64_t> peakBytes{0};
thread_local bool stockAllocation = false;  // StockCpuAllocation

constexpr size_t kMinCachedBytes = 256 << 10;

int64_t defaultCacheCap() {
  const char* megabytes = std::getenv("OCTO_NATIVE_CPU_CACHE_MB");
  if (megabytes && *megabytes) return std::max<int64_t>(0, std::atoll(megabytes)) << 20;
  return int64_t{256} << 20;
}

// Eight classes per power of two (at most 12.5% rounding), so a block fits any request that
// rounds to its class.
size_t sizeClass(size_t bytes) {
  size_t power = 1;
  while (power * 2 <= bytes) power *= 2;
  const size_t granule = std::max<size_t>(power / 8, 4096);
  return (bytes + granule - 1) / granule * granule;
}

// Freed blocks by size class, oldest first within the cap.
class BlockCache {
 public:
  struct Block {
    size_t bytes;  // the class size actually allocated
    c10::DataPtr memory;
  };

  // A kept block of this class, or an empty DataPtr.
  c10::DataPtr take(size_t classBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = byClass_.find(classBytes);
    if (it == byClass_.end()) return {};
    auto entry = it->second;
    byClass_.erase(it);
    c10::DataPtr memory = std::move(entry->memory);
    heldBytes_ -= static_cast<int64_t>(classBytes);
    order_.erase(entry);
    return memory;
  }

  // Keeps `memory` if it fits under the cap, dropping the oldest kept blocks to make room;
  // otherwise frees it. Blocks are freed outside the lock.
  void give(size_t classBytes, c10::DataPtr memory) {
    std::list<Block> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int64_t>(classBytes) > cap_) {
        dropped.push_back({classBytes, std::move(memory)});
      } else {
        while (heldBytes_ + static_cast<int64_t>(classBytes) > cap_) dropOldest(dropped);
        order_.push_back({classBytes, std::move(memory)});
        byClass_.emplace(classBytes, std::prev(order_.end()));
        heldBytes_ += static_cast<int64_t>(classBytes);
      }
    }
  }

  int64_t heldBytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return heldBytes_;
  }

  int64_t cap() const { return cap_; }  // fixed at start-up

 private:
  void dropOldest(std::list<Block>& dropped) {
    auto oldest = order_.begin();
    for (auto it = byClass_.lower_bound(oldest->bytes); it != byClass_.end(); ++it)
      if (it->second == oldest) {
        byClass_.erase(it);
        break;
      }
    heldBytes_ -= static_cast<int64_t>(oldest->bytes);
    dropped.splice(dropped.end(), order_, oldest);
  }

  std::mutex mutex_;
  std::list<Block> order_;  // oldest first
  std::multimap<size_t, std::list<Block>::iterator> byClass_;
  int64_t heldBytes_ = 0;
  const int64_t cap_ = defaultCacheCap();
};

BlockCache& blockCache() {
  static auto* cache = new BlockCache();  // never destroyed: tensors may be freed at exit
  return *cache;
}

struct Allocation {
  int64_t bytes;      // requested
  size_t classBytes;  // 0: not from (and not returned to) the block cache
  c10::DataPtr inner;
};

// Allocations by data pointer. libtorch's raw_allocate() (some BF16 kernels' workspaces) needs a
// DataPtr whose context is the data pointer itself and a deleter that takes only that pointer,
// so the bookkeeping cannot ride in the context.
class AllocationTable {
 public:
  void add(void* data, Allocation allocation) {
    std::lock_guard<std::mutex> lock(mutex_);
    table_.emplace(data, std::move(allocation));
  }
  Allocation remove(void* data) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = table_.find(data);
    TORCH_INTERNAL_ASSERT(it != table_.end(), "freeing a CPU block the engine's allocator did not hand out");
    Allocation allocation = std::move(it->second);
    table_.erase(it);
    return allocation;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, Allocation> table_;
};

AllocationTable& allocations() {
  static auto* table = new AllocationTable();  // never destroyed: tensors may be freed at exit
  return *table;
}

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
    const bool cached = bytes >= kMinCachedBytes && !stockAllocation && blockCache().cap() > 0;
    const size_t classBytes = cached ? sizeClass(bytes) : 0;
    c10::DataPtr innerPtr = cached ? blockCache().take(classBytes) : c10::DataPtr();
    if (!innerPtr) innerPtr = inner_->allocate(cached ? classBytes : bytes);
    void* data = innerPtr.get();
    if (data == nullptr) return innerPtr;  // zero bytes: nothing to count or keep
    const c10::Device device = innerPtr.device();
    const int64_t now = currentBytes += static_cast<int64_t>(bytes);
    int64_t peak = peakBytes.load();
    while (now > peak && !peakBytes.compare_exchange_weak(peak, now)) {
    }
    allocations().add(data, Allocation{static_cast<int64_t>(bytes), classBytes, std::move(innerPtr)});
    return {data, data, &release, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }
#if OCTO_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif

 private:
  static void release(void* data) {
    Allocation allocation = allocations().remove(data);
    currentBytes -= allocation.bytes;
    if (allocation.classBytes > 0) blockCache().give(allocation.classBytes, std::move(allocation.inner));
    // anything not kept is freed here, through the inner allocator's DataPtr
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

StockCpuAllocation::StockCpuAllocation() : previous_(stockAllocation) { stockAllocation = true; }

StockCpuAllocation::~StockCpuAllocation() { stockAllocation = previous_; }

MemoryUse deviceMemory(at::Device device, bool resetPeak) {
  if (device.is_cpu()) {
    installCpuMemoryTracker();
    if (resetPeak) peakBytes = currentBytes.load();
    return {currentBytes.load(), peakBytes.load(), blockCache().heldBytes()};
  }
#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
  if (device.is_cuda()) {
    namespace allocator = c10::cuda::CUDACachingAllocator;
    const auto index = device.has_index() ? device.index() : static_cast<c10::DeviceIndex>(0);
    if (resetPeak) allocator::resetPeakStats(index);
    // Entry 0 is StatType::AGGREGATE (all pools); the enum's namespace moved between versions.
    const auto stats = allocator::getDeviceStats(index);
    const auto& bytes = stats.allocated_bytes[0];
    return {bytes.current, bytes.peak, stats.reserved_bytes[0].current - bytes.current};
  }
#endif
  TORCH_CHECK(false, "memory statistics are kept for cpu and cuda devices, not ", device);
}

}  // namespace octo
