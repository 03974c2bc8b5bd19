// One optimizer step of policy-gradient (or supervised) training on a DecoderModel:
// micro-batch forward + fused loss + backward with gradient accumulation, then clip + AdamW.
//
// Per-token tensors are aligned with the input ids: entry [b, t] concerns token t of row b,
// predicted from the tokens before it (so entry [b, 0] is never trained).
#pragma once

#include "core/logprobs.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/policy_loss.h"

namespace octo {

class DistributedGroup;
class GradientReducer;
struct GradientReducerOptions;
struct ReduceReport;
class ParameterShards;
struct ShardingOptions;
struct ShardMemory;
struct StatePiece;

struct MicroBatch {
  at::Tensor inputIds;       // [B, T] int64, right-padded
  at::Tensor attentionMask;  // [B, T] bool: real tokens
  at::Tensor lossMask;       // [B, T] float 0/1 (m_loss)
  at::Tensor klMask;         // [B, T] float 0/1 (m_kl)
  at::Tensor advantages;     // [B, T] float
  at::Tensor oldLogprobs;    // [B, T] float (policy objective)
  at::Tensor refLogprobs;    // [B, T] float (when klCoef != 0)
};

enum class Objective { Policy, Supervised };

struct TrainerOptions {
  AdamWOptions adamw;
  double maxGradNorm = 1.0;            // global-norm clipping (0 = off)
  bool activationCheckpointing = false;
  int64_t logprobChunkSize = 0;        // tokens per chunk of the log-prob op (0: from its memory budget; lib/native.ts LOGPROB_CHUNK_SIZE)
  double temperature = 1.0;            // log-probs of softmax(logits / T), as at sampling time
};

struct AccumulateResult {
  PolicyLossStats stats;   // policy objective
  double loss = 0;         // the micro-batch's contribution to the step loss
  bool finite = true;      // false: the loss was NaN/Inf and no gradient was accumulated
};

struct StepResult {
  double gradNorm = 0;  // before clipping
  bool skipped = false; // non-finite gradients, or an update that would be: no update, gradients dropped
  int64_t step = 0;     // optimizer steps taken so far
  // sharded: the all-gather of the parameters after the update (fsdp: also after a skipped one)
  int64_t gatheredBytes = 0;
  double gatherSeconds = 0;
};

class Trainer {
 public:
  Trainer(std::shared_ptr<DecoderModel> model, TrainerOptions options);
  ~Trainer();

  // Throws when this trainer cannot train `model` (float16); cheap, allocates nothing.
  static void checkTrainable(const DecoderModel& model);

  // Data-parallel training over `group`: makes every rank's weights rank 0's (as DDP does at
  // construction) and from then on sums gradients over the ranks in reduceGradients().
  void enableDataParallel(std::shared_ptr<DistributedGroup> group, const GradientReducerOptions& options);
  bool dataParallel() const { return reducer_ != nullptr || shards_ != nullptr; }
  // Sharded data parallelism instead (zero2 or fsdp, core/parameter_shards.h), on the trainable
  // tensors: rank 0's weights go to every rank, then each keeps 1/W of the optimizer state.
  void enableSharded(std::shared_ptr<DistributedGroup> group, const ShardingOptions& options);
  bool sharded() const { return shards_ != nullptr; }

  // Forward + loss + backward of one micro-batch; gradients add up until step(). Data-parallel:
  // `lastOfStep` marks the step's last micro-batch, whose backward may start the all-reduce.
  AccumulateResult accumulate(const MicroBatch& batch, Objective objective, const PolicyLossOptions& loss,
                              const LossNormalizers& normalizers, bool lastOfStep = true);
  // Data-parallel: sums the accumulated gradients over the ranks. Every rank calls it once per
  // step after its micro-batches (also a rank that had none, or whose loss was not finite), and
  // before step() or zeroGrad().
  ReduceReport reduceGradients();
  // Sharded: a rank with fewer micro-batches than another runs this for each one it lacks (the
  // collectives of a micro-batch, adding nothing), so every rank's collectives pair up.
  void accumulatePadding();
  StepResult step(double lr);
  void zeroGrad();

  // Everything a resumed run needs besides the model weights, by name: AdamW moments
  // ("exp_avg.<param>", "exp_avg_sq.<param>") and, for bf16/fp16 models, the fp32 masters
  // ("master.<param>"), for the trainable tensors (DecoderModel::trainableParameters: under LoRA
  // the adapters, by their PEFT names). The step count travels separately.
  // Sharded: this rank's part of each tensor, 1-D, and stateStarts() says where each begins.
  std::vector<std::pair<std::string, at::Tensor>> stateTensors();
  std::vector<int64_t> stateStarts() const;  // empty unless sharded
  void restoreState(const std::unordered_map<std::string, at::Tensor>& tensors, int64_t steps);
  // From pieces of any layout (whole tensors, or the shards of a run of any world size).
  void restoreStatePieces(const std::vector<StatePiece>& pieces, int64_t steps);
  ShardMemory shardMemory() const;  // sharded only

  const std::shared_ptr<DecoderModel>& model() const { return model_; }
  AdamW& optimizer() {  // replicated training's
    ensureReplicatedState();
    return *optimizer_;
  }

 private:
  std::shared_ptr<DecoderModel> model_;
  TrainerOptions options_;
  std::vector<std::string> names_;        // parameter names, HF order
  std::vector<at::Tensor> modelParams_;  // the tensors the forward uses
  std::vector<at::Tensor> masters_;      // fp32 copies (the same tensors when the model is fp32)
  // Low-precision models, single process: the step's gradients summed in fp32 over its
  // micro-batches (data-parallel: the reducer's buckets hold them). Undefined for fp32 params.
  std::vector<at::Tensor> mainGrads_;
  std::vector<bool> hasMainGrad_;
  bool lowPrecision_ = false;
  void foldGradients();  // this micro-batch's low-precision gradients into the fp32 main ones
  // The masters and AdamW of replicated training, made on first use (never, when sharded: a
  // whole copy would not fit where sharding is needed).
  void ensureReplicatedState();
  void broadcastFromRankZero(DistributedGroup& group, std::vector<at::Tensor>& tensors);
  AccumulateResult accumulateLocal(const MicroBatch& batch, Objective objective, const PolicyLossOptions& loss,
                                   const LossNormalizers& normalizers, bool lastOfStep);
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<GradientReducer> reducer_;  // data-parallel only
  std::unique_ptr<ParameterShards> shards_;   // sharded data-parallel only
  bool gradientsReduced_ = false;
  int64_t rank_ = 0;                  // data-parallel rank (0 alone)
  int64_t microBatchesThisStep_ = 0;  // accumulate() calls since the last step or zeroGrad
  int64_t stepsTaken() const;        // optimizer steps so far (either kind of state)
  int64_t loraDropoutSeed() const;    // the seed of this micro-batch's LoRA dropout masks (-1: none)
};

}  // namespace octo
