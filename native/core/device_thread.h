// One engine thread per device: every heavy call for a device (model creation and loading,
// forward, generate, log-probs, the train step, optimizer state, save) runs on that device's
// thread, one at a time, in the order the calls were posted. See native/README.md, "Threads".
//
// Why one thread and not a pool: libtorch keeps much of its state per calling thread. glibc
// gives each thread its own malloc arena (memory freed by one call is not reused by the next
// one on another thread), OpenMP builds one intra-op team per calling thread (teams of idle
// threads compete for the cores), and CUDA's current stream, graph-capture mode and caching-
// allocator pools are per thread too. One long-lived thread per device reuses all of it.
#pragma once

#include "core/torch_prelude.h"

#include <functional>

namespace octo {

class DeviceThread {
 public:
  using Job = std::function<void()>;

  // The thread of `device` (CPU: one for all of it; CUDA: one per index), started on first use
  // and kept for the life of the process.
  static DeviceThread& of(const at::Device& device);

  // Queues `job` behind every job posted before it. A job must not throw (callers catch and
  // report their own errors); one that does is stopped there, and the thread goes on.
  void post(Job job);

  // Intra-op threads of every engine thread (0 = libtorch's default, sized to the cores).
  // Each engine thread applies a change before its next job.
  static void setIntraOpThreads(int threads);
  // What the engine threads compute with: the count set above, or libtorch's default.
  static int intraOpThreads();

  DeviceThread(const DeviceThread&) = delete;
  DeviceThread& operator=(const DeviceThread&) = delete;

 private:
  explicit DeviceThread(at::Device device);
  void loop();

  struct Queue;
  at::Device device_;
  std::shared_ptr<Queue> queue_;
};

}  // namespace octo
