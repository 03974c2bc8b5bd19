// The gradient all-reduce of data-parallel training, in buckets as PyTorch's DDP reducer does it.
//
// Parameters are grouped, in reverse order (about the order backward produces their gradients),
// into flat fp32 buckets of about `bucketBytes`; each bucket is summed over the ranks by one c10d
// all-reduce. Each rank's loss is already divided by the step-wide counts of ALL ranks, so the sum
// is exactly the gradient of the combined batch: no division by the world size follows.
//
// Overlap: when the last backward of a step is armed, a post-hook on every parameter's
// AccumulateGrad node marks the gradient final; a bucket whose gradients are all final is
// launched (async all-reduce) while the rest of the backward runs. Buckets are launched strictly
// in index order, so every rank issues the same collectives in the same order whatever order its
// hooks fire in (Gloo pairs collectives by call order). finish() launches whatever is left (a
// parameter that got no gradient in the last micro-batch, or a rank that skipped that backward
// on a non-finite loss), waits, and writes the sums back.
#pragma once

#include "core/distributed.h"

namespace octo {

struct GradientReducerOptions {
  int64_t bucketBytes = 25 << 20;  // fp32 bytes per bucket (DDP's default, 25 MiB)
  bool overlapBackward = true;     // launch buckets from the backward's hooks
  // Low-precision (bf16/fp16) models: the buckets are the fp32 main gradients of the whole step.
  // Each micro-batch's gradients are added into them (foldIn; the last one's as its buckets
  // launch) instead of accumulating in the model's dtype, and zeroMainGradients() clears them.
  bool mainGradients = false;
};

struct ReduceReport {
  double seconds = 0;           // spent in finish(): launching the rest and waiting for all buckets
  int64_t buckets = 0;
  int64_t bucketsDuringBackward = 0;  // launched by the hooks, under the backward
  int64_t bytes = 0;            // fp32 bytes all-reduced (gradients); sharded: entering the reduce-scatters
  int64_t gathers = 0;          // sharded (fsdp): parameter all-gathers inside the micro-batches
  int64_t gatherBytes = 0;      // their output bytes (model dtype)
};

class GradientReducer {
 public:
  // `params`: the model's trainable tensors (their .grad() is read), in the model's order.
  GradientReducer(std::shared_ptr<DistributedGroup> group, std::vector<at::Tensor> params, GradientReducerOptions options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward is the last of the step: its hooks may launch buckets.
  void arm();
  // mainGradients: adds params[k]'s gradient (this micro-batch's) into its fp32 main gradient.
  void foldIn(size_t k);
  void zeroMainGradients();
  // Sums every gradient over the ranks and sets targets[i].grad() to the sum (targets are the
  // fp32 master weights, the params themselves for an fp32 model). A parameter with no gradient
  // on any rank keeps none (AdamW leaves it alone, as a single process would).
  ReduceReport finish(const std::vector<at::Tensor>& targets);

  const std::shared_ptr<DistributedGroup>& group() const { return group_; }
  int64_t bucketCount() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offsets;  // start of each parameter in `flat`
    at::Tensor flat;              // [numel] fp32
    int64_t pending = 0;          // gradients not yet final (armed backward)
    c10::intrusive_ptr<c10d::Work> work;
  };

  void onGradientFinal(size_t param);
  void launchReadyInOrder();
  void launch(Bucket& bucket);

  std::shared_ptr<DistributedGroup> group_;
  std::vector<at::Tensor> params_;
  GradientReducerOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucketOf_;  // param -> bucket
  std::vector<size_t> slotOf_;    // param -> its place in its bucket's params/offsets
  std::vector<bool> folded_;      // mainGradients: param k has had a gradient this step
  // Our post-hooks on the parameters' AccumulateGrad nodes (defined in the .cpp: the node's
  // pointer type changed in libtorch 2.13, shared_ptr before, intrusive_ptr since).
  struct AccumulatorHooks;
  std::unique_ptr<AccumulatorHooks> hooks_;
  bool armed_ = false;
  size_t nextBucket_ = 0;  // buckets below this have been launched
  int64_t launchedDuringBackward_ = 0;
};

}  // namespace octo
