#include "core/device_thread.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace octo {

namespace {

std::atomic<int> requestedThreads{0};  // setIntraOpThreads; 0 = the default

// Applies setIntraOpThreads on the calling engine thread when it changed since the last job.
void applyIntraOpThreads(int& applied) {
  const int threads = requestedThreads.load();
  if (threads == applied) return;
  if (threads > 0) at::set_num_threads(threads);
  applied = threads;
}

}  // namespace

struct DeviceThread::Queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Job> jobs;
};

DeviceThread& DeviceThread::of(const at::Device& device) {
  static std::mutex registryMutex;
  // Never destroyed: a thread blocked in a collective or a long kernel at exit must not make
  // process teardown wait for it (a joinable std::thread would abort it instead).
  static auto* registry = new std::map<std::string, DeviceThread*>();
  const at::Device key = device.is_cuda() && !device.has_index() ? at::Device(at::kCUDA, 0) : device;
  std::lock_guard<std::mutex> lock(registryMutex);
  DeviceThread*& thread = (*registry)[key.str()];
  if (!thread) thread = new DeviceThread(key);
  return *thread;
}

DeviceThread::DeviceThread(at::Device device) : device_(device), queue_(std::make_shared<Queue>()) {
  std::thread([this]() { loop(); }).detach();
}

void DeviceThread::post(Job job) {
  {
    std::lock_guard<std::mutex> lock(queue_->mutex);
    queue_->jobs.push_back(std::move(job));
  }
  queue_->ready.notify_one();
}

void DeviceThread::setIntraOpThreads(int threads) { requestedThreads = threads; }

int DeviceThread::intraOpThreads() {
  const int threads = requestedThreads.load();
  return threads > 0 ? threads : at::get_num_threads();
}

void DeviceThread::loop() {
#if defined(OCTO_WITH_CUDA) && OCTO_WITH_CUDA
  if (device_.is_cuda()) c10::cuda::set_device(device_.index());
#endif
  int applied = 0;
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(queue_->mutex);
      queue_->ready.wait(lock, [&]() { return !queue_->jobs.empty(); });
      job = std::move(queue_->jobs.front());
      queue_->jobs.pop_front();
    }
    applyIntraOpThreads(applied);
    try {
      job();
    } catch (...) {
      // Callers catch their own errors; this only keeps the thread alive for the next job.
    }
  }
}

}  // namespace octo
