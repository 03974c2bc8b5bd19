// Data-parallel communication (docs/methods.md §13) on PyTorch's own c10d process groups: a TCPStore
// rendezvous from torchrun's convention (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), Gloo for
// CPU tensors, NCCL for CUDA tensors when the libtorch was built with it. Nothing here
// implements a collective: every all-reduce and broadcast is c10d's.
//
// Failure handling: every collective runs with the group's timeout, so a rank whose peer died
// (the socket closes: Gloo fails at once) or hangs (nothing arrives: Gloo fails at the timeout)
// gets a DistributedError naming the operation, instead of waiting forever.
#pragma once

#include "core/torch_prelude.h"

#include <chrono>
#include <stdexcept>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace octo {

// libtorch 2.x moved the collectives of a backend from ProcessGroup into Backend; 1.13 has
// them on ProcessGroup. ProcessGroupGloo / ProcessGroupNCCL derive from whichever it is.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

struct ProcessGroupOptions {
  int64_t rank = 0;
  int64_t worldSize = 1;
  std::string masterAddr = "127.0.0.1";  // rank 0 serves the TCPStore here
  int64_t masterPort = 29500;
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  // rendezvous and every collective
  std::string backend = "auto";  // "auto" (nccl on a CUDA device, gloo otherwise) | "gloo" | "nccl"
  at::Device device = at::kCPU;  // where the tensors it reduces live (the model's device)
};

enum class ReduceOp { Sum, Max, Min };

// A collective failed: a peer died, hung past the timeout, or the rendezvous did not complete.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class DistributedGroup {
 public:
  // Joins the group: blocks until all `worldSize` ranks have met at the store, or throws after
  // the timeout.
  explicit DistributedGroup(const ProcessGroupOptions& options);
  ~DistributedGroup();
  DistributedGroup(const DistributedGroup&) = delete;
  DistributedGroup& operator=(const DistributedGroup&) = delete;

  int64_t rank() const { return options_.rank; }
  int64_t worldSize() const { return options_.worldSize; }
  const std::string& backend() const { return backend_; }
  at::Device device() const { return options_.device; }
  std::chrono::milliseconds timeout() const { return options_.timeout; }

  // Blocking collectives; each tensor is reduced in place (same shapes on every rank).
  void allReduce(std::vector<at::Tensor>& tensors, ReduceOp op, const std::string& what);
  void broadcast(std::vector<at::Tensor>& tensors, int64_t root, const std::string& what);
  void barrier(const std::string& what);

  // Launches an in-place sum of `tensor`; finish it with wait().
  c10::intrusive_ptr<c10d::Work> allReduceAsync(at::Tensor& tensor);

  // The collectives of sharded data parallelism (core/parameter_shards.h). `input` [W * S] of every
  // rank is summed and rank r keeps elements [r * S, (r + 1) * S): `result`, valid after wait(work).
  // NCCL: c10d's reduce-scatter into a new [S] tensor. Gloo (libtorch 1.13's has no
  // reduce-scatter): an all-reduce of `input` in place, and `result` is the slice of it.
  struct ReduceScatter {
    c10::intrusive_ptr<c10d::Work> work;
    at::Tensor result;
  };
  ReduceScatter reduceScatterAsync(at::Tensor& input);
  // Every rank's `input` [S] into `output` [W * S] (rank r's at r * S); `input` may be that slice
  // of `output` itself. NCCL: c10d's all-gather into one tensor; Gloo (no _allgather_base in 1.13):
  // the all-gather into a list, whose entries are views of `output`. `channel` 1 runs it on the
  // second process group (openSecondChannel), so parameter gathers issued from the backward's hooks
  // never interleave differently with the gradient reductions on different ranks.
  c10::intrusive_ptr<c10d::Work> allGatherAsync(at::Tensor& output, at::Tensor& input, int channel = 0);
  // Creates the second process group over the same store (a collective: every rank calls it once).
  void openSecondChannel();
  // Waits for `work` within the timeout; a failure becomes a DistributedError naming `what`.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const;
  // Leaves the group: NCCL's communicators are shut down (freeing their GPU memory and threads
  // before the process exits); later collectives throw. Idempotent; the destructor calls it.
  void shutdown();

 private:
  void checkOpen(const std::string& what) const;

  ProcessGroupOptions options_;
  std::string backend_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<CollectiveBackend> group_;
  c10::intrusive_ptr<CollectiveBackend> secondGroup_;  // openSecondChannel
  c10::intrusive_ptr<CollectiveBackend> createBackend(const c10::intrusive_ptr<c10d::Store>& store);
  bool shutDown_ = false;
};

// The backends this build can create: "gloo", and "nccl" on a CUDA libtorch built with it.
std::vector<std::string> availableBackends();

}  // namespace octo
