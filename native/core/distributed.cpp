#include "core/distributed.h"

#include <cstdio>
#include <cstdlib>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace octo {

namespace {

// The first line of a c10d/Gloo error, without libtorch's backtrace.
std::string describe(const std::exception& error) {
  const auto* c10Error = dynamic_cast<const c10::Error*>(&error);
  std::string text = c10Error ? c10Error->what_without_backtrace() : error.what();
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

std::string seconds(std::chrono::milliseconds timeout) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", static_cast<double>(timeout.count()) / 1000.0);
  return text;
}

bool isLoopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

c10d::ReduceOp toC10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return c10d::ReduceOp::SUM;
    case ReduceOp::Max: return c10d::ReduceOp::MAX;
    case ReduceOp::Min: return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

#ifdef USE_C10D_GLOO
// The network device Gloo's pairs connect over, chosen as torch.distributed does: the interface
// GLOO_SOCKET_IFNAME names, else the loopback device when the master is on this host (every
// rank is then local), else the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> glooDevice(const std::string& masterAddr) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface && *interface)
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  if (isLoopback(masterAddr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

std::vector<std::string> availableBackends() {
  std::vector<std::string> out;
#ifdef USE_C10D_GLOO
  out.push_back("gloo");
#endif
#ifdef USE_C10D_NCCL
  out.push_back("nccl");
#endif
  return out;
}

DistributedGroup::DistributedGroup(const ProcessGroupOptions& options) : options_(options) {
  TORCH_CHECK(options.worldSize >= 1, "WORLD_SIZE must be >= 1 (got ", options.worldSize, ")");
  TORCH_CHECK(options.rank >= 0 && options.rank < options.worldSize, "RANK must be in [0, WORLD_SIZE) (got RANK=",
              options.rank, ", WORLD_SIZE=", options.worldSize, ")");
  TORCH_CHECK(options.masterPort > 0 && options.masterPort < 65536, "MASTER_PORT must be a TCP port (got ", options.masterPort, ")");
  backend_ = options.backend == "auto" ? (options.device.is_cuda() ? "nccl" : "gloo") : options.backend;
  TORCH_CHECK(backend_ != "nccl" || options.device.is_cuda(), "the nccl backend reduces CUDA tensors; this model is on ",
              options.device, " (use backend gloo)");
  TORCH_CHECK(backend_ != "gloo" || !options.device.is_cuda(),
              "this build reduces CUDA gradients with nccl only; use backend nccl or auto");

  c10d::TCPStoreOptions storeOptions;
  storeOptions.port = static_cast<std::uint16_t>(options.masterPort);
  storeOptions.isServer = options.rank == 0;
  storeOptions.numWorkers = static_cast<std::size_t>(options.worldSize);
  storeOptions.waitWorkers = true;
  storeOptions.timeout = options.timeout;
  const std::string where = "rank " + std::to_string(options.rank) + " of " + std::to_string(options.worldSize);
  try {
    // The store is the rendezvous: rank 0 serves it, the others connect, and the constructor
    // returns once all have (or throws at the timeout).
    auto tcpStore = c10::make_intrusive<c10d::TCPStore>(options.masterAddr, storeOptions);
    store_ = c10::make_intrusive<c10d::PrefixStore>("octo-native/default_pg", tcpStore);
  } catch (const std::exception& error) {
    throw DistributedError(where + ": the rendezvous at " + options.masterAddr + ":" + std::to_string(options.masterPort) +
                           " did not complete within " + seconds(options.timeout) +
                           " (are all ranks started with the same MASTER_ADDR/MASTER_PORT and WORLD_SIZE?): " + describe(error));
  }
  try {
    group_ = createBackend(store_);
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& error) {
    throw DistributedError(where + ": creating the " + backend_ + " process group failed: " + describe(error));
  }
}

c10::intrusive_ptr<CollectiveBackend> DistributedGroup::createBackend(const c10::intrusive_ptr<c10d::Store>& store) {
  const int rank = static_cast<int>(options_.rank), size = static_cast<int>(options_.worldSize);
  if (backend_ == "gloo") {
#ifdef USE_C10D_GLOO
    auto glooOptions = c10d::ProcessGroupGloo::Options::create(options_.timeout);
    glooOptions->devices.push_back(glooDevice(options_.masterAddr));
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, glooOptions);
#else
    TORCH_CHECK(false, "this build of octo-native has no Gloo (its headers were missing at build time): "
                       "install libgloo-dev and rebuild with 'npm run build:native'");
#endif
  } else if (backend_ == "nccl") {
#ifdef USE_C10D_NCCL
    // Without blocking wait, NCCL ignores the timeout on the host side; with it, wait() throws
    // once a collective exceeds it (the dead-or-hung-peer case).
    setenv("NCCL_BLOCKING_WAIT", "1", 0);
    setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    // This rank's GPU (cuda:LOCAL_RANK, lib/engine/distributed.ts) is current before NCCL
    // makes its communicators; otherwise they bind to whatever device is current (cuda:0).
    if (options_.device.has_index()) c10::cuda::set_device(options_.device.index());
    auto ncclOptions = c10d::ProcessGroupNCCL::Options::create();
    ncclOptions->timeout = options_.timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, ncclOptions);
#else
    TORCH_CHECK(false, "this build of octo-native has no NCCL: it needs a CUDA libtorch built with NCCL "
                       "(a torch wheel) and nccl.h at build time");
#endif
  }
  TORCH_CHECK(false, "unknown distributed backend '", backend_, "' (use auto, gloo or nccl)");
}

void DistributedGroup::openSecondChannel() {
  checkOpen("opening the parameter channel");
  if (secondGroup_) return;
  try {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("octo-native/second_pg", store_);
    secondGroup_ = createBackend(prefixed);
  } catch (const std::exception& error) {
    throw DistributedError("rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.worldSize) +
                           ": creating the second " + backend_ + " process group failed: " + describe(error));
  }
}

void DistributedGroup::checkOpen(const std::string& what) const {
  if (shutDown_) throw DistributedError(what + ": this process group was shut down");
}

void DistributedGroup::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const {
  try {
    // Gloo enforces the timeout inside the collective; the wait's own bound (a little later)
    // is the backstop for a backend that does not.
    work->wait(options_.timeout + std::chrono::seconds(5));
  } catch (const std::exception& error) {
    throw DistributedError("rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.worldSize) + ": " + what +
                           " failed: a peer rank exited or did not answer within the " + seconds(options_.timeout) +
                           " timeout (" + describe(error) + ")");
  }
}

void DistributedGroup::allReduce(std::vector<at::Tensor>& tensors, ReduceOp op, const std::string& what) {
  checkOpen(what);
  c10d::AllreduceOptions reduce;
  reduce.reduceOp = toC10d(op);
  reduce.timeout = options_.timeout;
  for (auto& tensor : tensors) {
    std::vector<at::Tensor> one{tensor};
    wait(group_->allreduce(one, reduce), what);
  }
}

c10::intrusive_ptr<c10d::Work> DistributedGroup::allReduceAsync(at::Tensor& tensor) {
  checkOpen("the gradient all-reduce");
  c10d::AllreduceOptions reduce;
  reduce.timeout = options_.timeout;
  std::vector<at::Tensor> one{tensor};
  return group_->allreduce(one, reduce);
}

DistributedGroup::ReduceScatter DistributedGroup::reduceScatterAsync(at::Tensor& input) {
  checkOpen("the gradient reduce-scatter");
  const int64_t world = options_.worldSize;
  TORCH_CHECK(input.dim() == 1 && input.numel() % world == 0, "a reduce-scatter needs a flat input of a multiple of ",
              world, " elements");
  const int64_t shard = input.numel() / world;
  ReduceScatter out;
  if (backend_ == "nccl") {
    c10d::ReduceScatterOptions options;
    options.timeout = options_.timeout;
    out.result = at::empty({shard}, input.options());
    out.work = group_->_reduce_scatter_base(out.result, input, options);
  } else {
    out.work = allReduceAsync(input);
    out.result = input.narrow(0, options_.rank * shard, shard);
  }
  return out;
}

c10::intrusive_ptr<c10d::Work> DistributedGroup::allGatherAsync(at::Tensor& output, at::Tensor& input, int channel) {
  checkOpen("the parameter all-gather");
  TORCH_CHECK(channel == 0 || secondGroup_, "the second channel is not open (openSecondChannel)");
  const int64_t world = options_.worldSize, shard = input.numel();
  TORCH_CHECK(output.dim() == 1 && input.dim() == 1 && output.numel() == shard * world,
              "an all-gather needs a flat output of ", world, " x the input's elements");
  auto& backend = channel == 0 ? group_ : secondGroup_;
  c10d::AllgatherOptions options;
  options.timeout = options_.timeout;
  if (backend_ == "nccl") return backend->_allgather_base(output, input, options);
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < world; ++r) outputs[0].push_back(output.narrow(0, r * shard, shard));
  std::vector<at::Tensor> inputs{input};
  return backend->allgather(outputs, inputs, options);
}

void DistributedGroup::broadcast(std::vector<at::Tensor>& tensors, int64_t root, const std::string& what) {
  checkOpen(what);
  c10d::BroadcastOptions cast;
  cast.rootRank = root;
  cast.timeout = options_.timeout;
  for (auto& tensor : tensors) {
    std::vector<at::Tensor> one{tensor};
    wait(group_->broadcast(one, cast), what);
  }
}

void DistributedGroup::barrier(const std::string& what) {
  checkOpen(what);
  c10d::BarrierOptions options;
  options.timeout = options_.timeout;
  // NCCL runs a barrier as an all-reduce on a GPU: name ours, or it guesses rank % GPUs per
  // host, which on several hosts can pick a device no other collective used and hang.
  if (options_.device.is_cuda() && options_.device.has_index()) options.device_ids = {options_.device.index()};
  wait(group_->barrier(options), what);
}

void DistributedGroup::shutdown() {
  if (shutDown_ || !group_) return;
  shutDown_ = true;
#if defined(USE_C10D_NCCL) && OCTO_TORCH_AT_LEAST(2, 3)
  if (backend_ == "nccl") {
    for (auto* backend : {&secondGroup_, &group_}) {
      if (!*backend) continue;
      try {
        c10::static_intrusive_pointer_cast<c10d::ProcessGroupNCCL>(*backend)->shutdown();
      } catch (const std::exception& error) {
        std::fprintf(stderr, "octo-native: warning: shutting NCCL down failed: %s\n", describe(error).c_str());
      }
    }
  }
#endif
  secondGroup_.reset();
  group_.reset();
  store_.reset();
}

DistributedGroup::~DistributedGroup() { shutdown(); }

}  // namespace octo
