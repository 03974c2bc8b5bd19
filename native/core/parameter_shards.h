// Sharded data parallelism over c10d (docs/methods.md §13): ZeRO-2 and FSDP (ZeRO-3) on the
// trainer's trainable tensors.
//
// The trainable tensors are grouped into units, each one flat buffer `full` [W * S] in the model's
// dtype that the tensors alias (their storage is the unit's, so a gather lands in them in place).
// Rank r owns elements [r * S, (r + 1) * S) of every unit and keeps, for that slice only, the fp32
// master weights, the AdamW moments and the fp32 gradient of the step. Padding (at most W - 1
// elements per unit) belongs to no tensor and is never updated.
//  - zero2: units are buckets of about `bucketBytes` (fp32) in reverse order, as DDP's; `full` is
//    always allocated (every rank holds the whole model, so rollouts run as in ddp).
//  - fsdp: one unit per decoder layer, one for the embedding and one for the final norm and LM
//    head (the embedding too when tied); `full` is allocated only while gathered. The forward
//    gathers a layer just before it runs (the next one prefetched) and frees it after; the backward
//    gathers it again from a hook on the layer's output gradient (the one below prefetched) and
//    frees it once its gradients are final. After the optimizer step every unit is gathered again,
//    so generation, log-probs and saving see the whole model, as verl's hybrid engine does; the
//    first micro-batch of the next step frees them.
//
// Gradients: every backward (each micro-batch) reduce-scatters each unit's gradients once they are
// final (a post-hook on every tensor's AccumulateGrad), strictly in a fixed unit order so the ranks'
// collectives pair up, and each rank adds its slice into its fp32 gradient shard. Every rank runs
// the same number of micro-batches (lib/engine/trainer.ts agrees on it; a rank with fewer runs
// paddingMicroBatch(), the same collectives without a forward). The loss of each rank is already
// divided by the step-wide counts, so the sum is the combined batch's gradient.
// fsdp's parameter gathers run on the group's second channel: they are issued in a fixed order too,
// but from other hooks than the reductions, so the two streams could interleave differently.
#pragma once

#include "core/distributed.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/safetensors.h"

namespace octo {

enum class ShardingStrategy { Zero2, Fsdp };

struct ShardingOptions {
  ShardingStrategy strategy = ShardingStrategy::Zero2;
  int64_t bucketBytes = 25 << 20;  // zero2: fp32 bytes per unit
  bool overlapBackward = true;     // reduce-scatters from the backward's hooks; fsdp: prefetch the next gather
  bool activationCheckpointing = false;  // fsdp: the layers recompute in backward (q/k/v may stay fused)
  AdamWOptions adamw;
};

// The communication of one step (reduce-scatters of all its micro-batches, and the gathers).
struct ShardingReport {
  double seconds = 0;               // waiting for collectives in the micro-batches and finishStep()
  int64_t reduceScatters = 0;
  int64_t reduceScattersDuringBackward = 0;
  int64_t gradientBytes = 0;        // fp32 bytes entering the reduce-scatters (whole units)
  int64_t gathers = 0;              // fsdp's gathers inside the micro-batches
  int64_t gatherBytes = 0;          // their output bytes (model dtype)
};

struct ShardMemory {
  int64_t masterBytes = 0;      // fp32 master shards (an fp32 model's under zero2 is its weights' own slice)
  int64_t optimizerBytes = 0;   // AdamW moments
  int64_t gradientBytes = 0;    // fp32 gradient shards
  int64_t parameterBytes = 0;   // model-dtype bytes of the units held now (full ones, and fsdp's bf16 shards)
  int64_t peakGatheredBytes = 0;  // fsdp: the most unit bytes gathered at once in the last step's micro-batches
  int64_t largestUnitBytes = 0;
  int64_t units = 0;
};

// A piece of saved optimizer state: elements [start, start + numel(record)) of the flattened tensor
// `name` ("exp_avg.<param>", "exp_avg_sq.<param>", "master.<param>"), stored F32 in `record`.
struct StatePiece {
  int64_t start = 0;
  TensorRecord record;
};

// Saved optimizer state as pieces, by tensor name.
class StatePieces {
 public:
  explicit StatePieces(const std::vector<StatePiece>& pieces);
  bool has(const std::string& name) const { return byName_.count(name) > 0; }
  // Elements [start, start + target.numel()) of `name` into the 1-D `target`; throws, naming `who`
  // needs them, unless the pieces cover each exactly once.
  void read(const std::string& name, at::Tensor target, int64_t start, const std::string& who);

 private:
  std::unordered_map<std::string, std::vector<StatePiece>> byName_;
  SafetensorsReader reader_;
};

class ParameterShards : public ForwardHooks {
 public:
  // `params` are the trainer's trainable tensors (the model's own, named `names`), already equal on
  // every rank. They are moved into the units' storage here.
  ParameterShards(std::shared_ptr<DistributedGroup> group, std::shared_ptr<DecoderModel> model, std::vector<std::string> names,
                  std::vector<at::Tensor> params, ShardingOptions options);
  ~ParameterShards() override;
  ParameterShards(const ParameterShards&) = delete;
  ParameterShards& operator=(const ParameterShards&) = delete;

  // Around one micro-batch's forward and backward (fsdp: sets the model's forward hooks).
  void beginMicroBatch();
  // Launches the reductions (and fsdp's backward gathers) the backward did not, waits for them and
  // adds this rank's slices into the gradient shards. Also after a skipped backward (non-finite loss).
  void endMicroBatch();
  // After an exception inside a micro-batch: the model's hooks are cleared (the run is over).
  void abandonMicroBatch();
  // The collectives of one micro-batch, for a rank that has none left (they add nothing).
  void paddingMicroBatch();
  // After the step's micro-batches: which tensors got a gradient on some rank. Every rank calls it.
  ShardingReport finishStep();
  struct StepOutcome {
    double gradNorm = 0;
    bool skipped = false;
    int64_t steps = 0;
    int64_t gatherBytes = 0;  // the parameters' all-gather after the update
    double gatherSeconds = 0;
  };
  // Global-norm clipping (the norm over all ranks' shards), AdamW on this rank's shards (skipped on
  // every rank when it would not be finite on one), then the all-gather of the updated parameters.
  StepOutcome step(double lr, double maxGradNorm);
  // Drops the step's gradients; fsdp: gathers the parameters again if the step had freed them.
  void zeroGrad();

  // This rank's optimizer state: moments (and, for bf16/fp16 models, masters) of the part of each
  // tensor it owns, as 1-D tensors; `starts[i]` is where tensors[i] begins in its flattened tensor.
  std::vector<std::pair<std::string, at::Tensor>> stateTensors() const;
  std::vector<int64_t> stateStarts() const;
  // Restores from pieces of any layout (this one, another world size, or ddp's whole tensors):
  // each owned element must be covered.
  void restore(const std::vector<StatePiece>& pieces, int64_t steps);

  ShardMemory memory() const;
  int64_t steps() const { return optimizer_->steps(); }
  ShardingStrategy strategy() const { return options_.strategy; }

  // ForwardHooks (fsdp)
  void beforeEmbedding() override;
  void afterEmbedding() override;
  void beforeLayer(int64_t layer) override;
  at::Tensor afterLayer(int64_t layer, const at::Tensor& out) override;
  void beforeFinalNorm() override;
  bool fuseProjections() const override { return options_.activationCheckpointing; }

 private:
  struct Segment {  // the part of one tensor in this rank's shard of a unit
    size_t param;
    int64_t start;        // in the flattened tensor
    int64_t length;
    int64_t shardOffset;  // in the shard
  };
  struct Unit {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each tensor in `full`
    int64_t numel = 0, shard = 0;  // `full` holds W * shard elements
    at::Tensor full;               // [W * shard] model dtype; the tensors alias its storage
    at::Tensor master;             // [shard] fp32
    at::Tensor paramShard;         // fsdp: [shard] model dtype, what the gathers send (the master for fp32)
    at::Tensor grad;               // [shard] fp32: the step's gradient
    // One backward:
    int64_t pending = 0;  // tensors whose gradient is not final yet
    at::Tensor flatGrad;  // [W * shard] fp32 in flight
    DistributedGroup::ReduceScatter reduction;
    bool launched = false;
    // fsdp:
    bool resident = true;  // `full` holds the gathered parameters (or is being gathered)
    c10::intrusive_ptr<c10d::Work> gather;
  };

  int64_t bytesOf(const Unit& unit) const;
  void onGradientFinal(size_t param);
  void launchReadyReductions();
  void launchReduction(Unit& unit);
  void waitReductions();
  // fsdp residency
  void issueGather(int64_t unit);
  void ensureGathered(int64_t unit);
  void release(int64_t unit);
  void releaseAllForStep();
  void gatherAll(const std::string& what);  // from the masters (zero2) or the parameter shards (fsdp)
  void backwardGather(int64_t layer);
  void issueBackwardGathersThrough(int64_t layer);
  void prefetch(int64_t unit);
  void waitGather(Unit& unit);
  double timed(const std::function<void()>& wait);

  std::shared_ptr<DistributedGroup> group_;
  std::shared_ptr<DecoderModel> model_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  ShardingOptions options_;
  bool lowPrecision_ = false;
  int64_t world_ = 1, rank_ = 0;
  std::vector<Unit> units_;
  std::vector<int64_t> unitOf_;          // param -> unit
  std::vector<int64_t> reductionOrder_;  // unit indices, in the order their reduce-scatters are issued
  size_t nextReduction_ = 0;
  std::vector<bool> hasGradient_;        // param: got a gradient this step on this rank
  std::vector<bool> presentAnywhere_;    // after finishStep: on some rank
  bool armed_ = false;
  // fsdp: unit of the embedding (untied), of each layer (-1: none trainable), of the final norm and LM head
  int64_t embedUnit_ = -1, headUnit_ = -1;
  std::vector<int64_t> layerUnit_;
  int64_t nextBackwardGather_ = -1;  // the layer whose backward gather is issued next
  bool stepStarted_ = false;         // fsdp: this step's first micro-batch freed the gathered model
  bool inMicroBatch_ = false;
  int64_t gatheredBytes_ = 0, peakGatheredBytes_ = 0;
  // AdamW over the segments (fp32 master views) and their decay flags.
  std::vector<at::Tensor> segmentMasters_, segmentGrads_;
  std::vector<size_t> segmentParam_;
  std::vector<int64_t> segmentStart_;  // where each segment begins in its flattened tensor
  std::unique_ptr<AdamW> optimizer_;
  ShardingReport report_;
  struct AccumulatorHooks;
  std::unique_ptr<AccumulatorHooks> hooks_;
};

}  // namespace octo
