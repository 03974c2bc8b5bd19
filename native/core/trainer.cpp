#include "core/trainer.h"

#include <cmath>

#include "core/gradient_reducer.h"
#include "core/parameter_shards.h"

namespace octo {

namespace {

at::Tensor predictedSlice(const at::Tensor& perToken, const at::Tensor& flatIndex) {  // [B, T] -> [N]
  const int64_t T = perToken.size(1);
  return perToken.narrow(1, 1, T - 1).reshape({-1}).index_select(0, flatIndex);
}

}  // namespace

Trainer::Trainer(std::shared_ptr<DecoderModel> model, TrainerOptions options)
    : model_(std::move(model)), options_(options), lowPrecision_(model_->dtype() != at::kFloat) {
  checkTrainable(*model_);
  model_->setTrainable(true);
  // The model's trainable tensors: every weight, or under LoRA the adapters alone (the frozen base
  // then has no gradient, no master copy and no AdamW state).
  for (const auto& [name, tensor] : model_->trainableParameters()) {
    names_.push_back(name);
    modelParams_.push_back(tensor);
  }
}

void Trainer::ensureReplicatedState() {
  if (optimizer_ || shards_) return;
  at::NoGradGuard noGrad;
  // fp32 master weights when the model computes in a lower precision.
  for (const auto& tensor : modelParams_)
    masters_.push_back(tensor.scalar_type() == at::kFloat ? tensor : tensor.detach().to(at::kFloat).clone());
  optimizer_ = std::make_unique<AdamW>(masters_, options_.adamw);
  mainGrads_.resize(masters_.size());
  hasMainGrad_.assign(masters_.size(), false);
}

Trainer::~Trainer() = default;

void Trainer::checkTrainable(const DecoderModel& model) {
  TORCH_CHECK(!model.sharesWeights(), "this model is the base of a LoRA model with its adapters off (a reference policy), "
              "whose weights are frozen; train the LoRA model itself");
  TORCH_CHECK(model.dtype() != at::kHalf, "training in float16 needs loss scaling, which this trainer does not do; "
              "train in bfloat16 (model.dtype: bfloat16, the CUDA default) or float32");
}

void Trainer::broadcastFromRankZero(DistributedGroup& group, std::vector<at::Tensor>& tensors) {
  TORCH_CHECK(group.device() == model_->device(), "the process group reduces tensors on ", group.device(),
              " but the model is on ", model_->device());
  at::NoGradGuard noGrad;
  // Same parameter layout everywhere, checked before any broadcast could pair up wrong tensors.
  int64_t numel = 0;
  for (const auto& p : tensors) numel += p.numel();
  const double count = static_cast<double>(tensors.size()), total = static_cast<double>(numel);
  at::Tensor layout = at::tensor({count, total, -count, -total}, at::TensorOptions().dtype(at::kDouble)).to(group.device());
  std::vector<at::Tensor> layouts{layout};
  group.allReduce(layouts, ReduceOp::Max, "the parameter layout check");
  const at::Tensor seen = layout.cpu();
  const double* m = seen.data_ptr<double>();
  TORCH_CHECK(m[0] == -m[2] && m[1] == -m[3], "rank ", group.rank(), ": the ranks hold models of different sizes (",
              count, " tensors / ", total, " values here); every rank must load the same model");
  group.broadcast(tensors, 0, "the broadcast of rank 0's weights");
}

void Trainer::enableDataParallel(std::shared_ptr<DistributedGroup> group, const GradientReducerOptions& options) {
  TORCH_CHECK(!reducer_ && !shards_, "data-parallel training is already enabled on this trainer");
  ensureReplicatedState();
  broadcastFromRankZero(*group, masters_);
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < masters_.size(); ++i)
    if (!masters_[i].is_same(modelParams_[i])) modelParams_[i].copy_(masters_[i]);
  GradientReducerOptions reducerOptions = options;
  reducerOptions.mainGradients = lowPrecision_;
  rank_ = group->rank();
  reducer_ = std::make_unique<GradientReducer>(std::move(group), modelParams_, reducerOptions);
  mainGrads_.assign(masters_.size(), at::Tensor());  // the reducer's buckets hold them from now on
}

void Trainer::enableSharded(std::shared_ptr<DistributedGroup> group, const ShardingOptions& options) {
  TORCH_CHECK(!reducer_ && !shards_, "data-parallel training is already enabled on this trainer");
  TORCH_CHECK(!optimizer_, "sharded training must be enabled before the trainer's first step or state load");
  broadcastFromRankZero(*group, modelParams_);
  ShardingOptions sharding = options;
  sharding.adamw = options_.adamw;
  sharding.activationCheckpointing = options_.activationCheckpointing;
  rank_ = group->rank();
  shards_ = std::make_unique<ParameterShards>(std::move(group), model_, names_, modelParams_, sharding);
}

void Trainer::accumulatePadding() {
  TORCH_CHECK(shards_, "accumulatePadding() is for sharded training (enableSharded first)");
  shards_->paddingMicroBatch();
}

ShardMemory Trainer::shardMemory() const {
  TORCH_CHECK(shards_, "shardMemory() is for sharded training (enableSharded first)");
  return shards_->memory();
}

ReduceReport Trainer::reduceGradients() {
  if (shards_) {
    const ShardingReport sharded = shards_->finishStep();
    gradientsReduced_ = true;
    ReduceReport report;
    report.seconds = sharded.seconds;
    report.buckets = sharded.reduceScatters;
    report.bucketsDuringBackward = sharded.reduceScattersDuringBackward;
    report.bytes = sharded.gradientBytes;
    report.gathers = sharded.gathers;
    report.gatherBytes = sharded.gatherBytes;
    return report;
  }
  TORCH_CHECK(reducer_, "reduceGradients() is for data-parallel training (enableDataParallel first)");
  ReduceReport report = reducer_->finish(masters_);
  // The sums live on the fp32 masters; the low-precision copies are spent.
  for (size_t i = 0; i < masters_.size(); ++i)
    if (!masters_[i].is_same(modelParams_[i])) modelParams_[i].mutable_grad() = at::Tensor();
  gradientsReduced_ = true;
  return report;
}

AccumulateResult Trainer::accumulate(const MicroBatch& batch, Objective objective, const PolicyLossOptions& lossOptions,
                                     const LossNormalizers& normalizers, bool lastOfStep) {
  if (!shards_) {
    ensureReplicatedState();
    return accumulateLocal(batch, objective, lossOptions, normalizers, lastOfStep);
  }
  // Sharded: every micro-batch's gradients are reduce-scattered from its own backward.
  shards_->beginMicroBatch();
  AccumulateResult result;
  try {
    result = accumulateLocal(batch, objective, lossOptions, normalizers, lastOfStep);
  } catch (...) {
    shards_->abandonMicroBatch();
    throw;
  }
  shards_->endMicroBatch();
  return result;
}

AccumulateResult Trainer::accumulateLocal(const MicroBatch& batch, Objective objective, const PolicyLossOptions& lossOptions,
                                          const LossNormalizers& normalizers, bool lastOfStep) {
  const at::Device device = model_->device();
  const auto floats = at::TensorOptions().device(device).dtype(at::kFloat);
  const at::Tensor ids = batch.inputIds.to(device, at::kLong);
  const at::Tensor attention = batch.attentionMask.to(device, at::kBool);
  const at::Tensor lossMask = batch.lossMask.to(floats), klMask = batch.klMask.to(floats);
  TORCH_CHECK(ids.dim() == 2 && ids.size(1) >= 2, "a micro-batch needs [B, T] token ids with T >= 2");

  at::Tensor hidden = model_->hiddenStates(ids, rowPositions(ids), nullptr, attention, options_.activationCheckpointing,
                                           loraDropoutSeed());
  ++microBatchesThisStep_;
  const bool needKl = objective == Objective::Policy && lossOptions.klCoef != 0;
  at::Tensor need = needKl ? (lossMask + klMask) > 0 : lossMask > 0;
  SelectedTokens tokens = selectTokens(hidden, ids, need);

  TokenLogprobsOptions lpOptions;
  lpOptions.temperature = options_.temperature;
  lpOptions.chunkSize = options_.logprobChunkSize;
  lpOptions.withEntropy = objective == Objective::Policy && lossOptions.entropyCoef != 0;
  TokenLogprobs lp = tokenLogprobs(tokens.hidden, model_->lmHead(), tokens.targets, lpOptions);

  AccumulateResult result;
  at::Tensor loss;
  if (objective == Objective::Supervised) {
    // Token-mean negative log-likelihood over the step's loss tokens.
    const at::Tensor mask = predictedSlice(lossMask, tokens.flatIndex);
    loss = -(lp.logprobs * mask).sum() / std::max(normalizers.lossTokens, 1.0);
    result.stats.lossTokens = mask.sum().item<double>();
  } else {
    PolicyLossInputs in;
    in.logprobs = lp.logprobs;
    in.entropy = lp.entropy;
    in.oldLogprobs = predictedSlice(batch.oldLogprobs.to(floats), tokens.flatIndex);
    if (needKl) in.refLogprobs = predictedSlice(batch.refLogprobs.to(floats), tokens.flatIndex);
    in.advantages = predictedSlice(batch.advantages.to(floats), tokens.flatIndex);
    in.lossMask = predictedSlice(lossMask, tokens.flatIndex);
    in.klMask = needKl ? predictedSlice(klMask, tokens.flatIndex) : at::zeros_like(in.lossMask);
    in.sequenceIds = tokens.rows;
    in.numSequences = ids.size(0);
    PolicyLossResult policy = policyLoss(in, lossOptions, normalizers);
    loss = policy.loss;
    result.stats = policy.stats;
  }
  result.loss = loss.item<double>();
  result.finite = std::isfinite(result.loss);
  if (reducer_ && lastOfStep) reducer_->arm();
  if (result.finite && loss.requires_grad()) {
    loss.backward();
    // Data-parallel: the last micro-batch's gradients are folded in as their buckets launch.
    if (!(reducer_ && lastOfStep)) foldGradients();
  }
  return result;
}

void Trainer::foldGradients() {
  if (!lowPrecision_ || shards_) return;  // fp32 gradients accumulate exactly enough in .grad; sharded: in the shards
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < modelParams_.size(); ++i) {
    at::Tensor& grad = modelParams_[i].mutable_grad();
    if (!grad.defined()) continue;
    if (reducer_) {
      reducer_->foldIn(i);
    } else {
      if (!mainGrads_[i].defined()) mainGrads_[i] = at::zeros_like(masters_[i]);
      mainGrads_[i].add_(grad);
      hasMainGrad_[i] = true;
    }
    grad = at::Tensor();
  }
}

int64_t Trainer::stepsTaken() const {
  if (shards_) return shards_->steps();
  return optimizer_ ? optimizer_->steps() : 0;
}

int64_t Trainer::loraDropoutSeed() const {
  const LoraConfig* lora = model_->lora();
  if (!lora || lora->dropout == 0) return -1;
  // A function of (seed, optimizer step, micro-batch, rank) only: a resumed run draws the same masks.
  const int64_t parts[] = {stepsTaken(), microBatchesThisStep_, rank_};
  int64_t seed = static_cast<int64_t>(lora->seed >> 1);
  for (int64_t part : parts) seed = loraModuleSeed(seed, part, 0);
  return seed;
}

void Trainer::zeroGrad() {
  gradientsReduced_ = false;
  microBatchesThisStep_ = 0;
  if (shards_) {
    shards_->zeroGrad();
    return;
  }
  for (auto& p : modelParams_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  for (auto& m : masters_)
    if (m.grad().defined()) m.mutable_grad() = at::Tensor();
  if (reducer_ && lowPrecision_) reducer_->zeroMainGradients();
  for (size_t i = 0; i < mainGrads_.size(); ++i) {
    if (hasMainGrad_[i]) mainGrads_[i].zero_();
    hasMainGrad_[i] = false;
  }
}

StepResult Trainer::step(double lr) {
  TORCH_CHECK((!reducer_ && !shards_) || gradientsReduced_, "data-parallel training: call reduceGradients() before step()");
  if (shards_) {
    const ParameterShards::StepOutcome outcome = shards_->step(lr, options_.maxGradNorm);
    gradientsReduced_ = false;
    StepResult result;
    result.gradNorm = outcome.gradNorm;
    result.skipped = outcome.skipped;
    result.step = outcome.steps;
    result.gatheredBytes = outcome.gatherBytes;
    result.gatherSeconds = outcome.gatherSeconds;
    return result;
  }
  ensureReplicatedState();
  at::NoGradGuard noGrad;
  // Lower-precision models, single process: the fp32 main gradients go to the masters
  // (data-parallel: reduceGradients() already put the reduced ones there).
  for (size_t i = 0; !reducer_ && i < masters_.size(); ++i)
    if (hasMainGrad_[i]) masters_[i].mutable_grad() = mainGrads_[i];
  StepResult result;
  result.gradNorm = clipGradNorm(masters_, options_.maxGradNorm);
  // A non-finite gradient norm, or an update that would make a weight or moment non-finite (a
  // learning rate far too large, weights near the float range's end): no update at all.
  result.skipped = !std::isfinite(result.gradNorm) || !optimizer_->step(lr, result.gradNorm);
  if (!result.skipped)
    for (size_t i = 0; i < masters_.size(); ++i)
      if (!masters_[i].is_same(modelParams_[i])) modelParams_[i].copy_(masters_[i]);
  zeroGrad();
  result.step = optimizer_->steps();
  return result;
}

std::vector<std::pair<std::string, at::Tensor>> Trainer::stateTensors() {
  if (shards_) return shards_->stateTensors();
  ensureReplicatedState();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    out.emplace_back("exp_avg." + names_[i], optimizer_->firstMoments()[i]);
    out.emplace_back("exp_avg_sq." + names_[i], optimizer_->secondMoments()[i]);
    if (!masters_[i].is_same(modelParams_[i])) out.emplace_back("master." + names_[i], masters_[i]);
  }
  return out;
}

std::vector<int64_t> Trainer::stateStarts() const { return shards_ ? shards_->stateStarts() : std::vector<int64_t>(); }

void Trainer::restoreStatePieces(const std::vector<StatePiece>& pieces, int64_t steps) {
  if (shards_) return shards_->restore(pieces, steps);
  // Replicated: whole tensors, assembled from whatever pieces hold them (a sharded run's files too).
  StatePieces state(pieces);
  std::unordered_map<std::string, at::Tensor> tensors;
  for (size_t i = 0; i < names_.size(); ++i) {
    for (const char* kind : {"exp_avg.", "exp_avg_sq.", "master."}) {
      const std::string name = kind + names_[i];
      if (!state.has(name)) continue;  // restoreState says what is missing
      at::Tensor whole = at::empty({modelParams_[i].numel()}, at::kFloat);
      state.read(name, whole, 0, "this process");
      tensors.emplace(name, whole.view(modelParams_[i].sizes()));
    }
  }
  restoreState(tensors, steps);
}

void Trainer::restoreState(const std::unordered_map<std::string, at::Tensor>& tensors, int64_t steps) {
  TORCH_CHECK(!shards_, "sharded training restores its state from pieces (restoreStatePieces)");
  ensureReplicatedState();
  auto get = [&](const std::string& name) -> at::Tensor {
    auto it = tensors.find(name);
    TORCH_CHECK(it != tensors.end(), "optimizer state is missing tensor '", name, "'");
    return it->second;
  };
  std::vector<at::Tensor> first, second;
  for (const auto& name : names_) {
    first.push_back(get("exp_avg." + name).to(masters_[0].device()));
    second.push_back(get("exp_avg_sq." + name).to(masters_[0].device()));
  }
  optimizer_->restore(steps, first, second);
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (masters_[i].is_same(modelParams_[i])) continue;
    const at::Tensor master = get("master." + names_[i]);
    TORCH_CHECK(master.sizes() == masters_[i].sizes(), "master weight '", names_[i], "' has shape ", master.sizes());
    masters_[i].copy_(master);
    modelParams_[i].copy_(masters_[i]);
  }
}

}  // namespace octo
