#include "core/parameter_shards.h"

#include <chrono>
#include <cmath>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace octo {

namespace {

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 for tensors outside the decoder layers.
int64_t layerOfName(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return -1;
  const size_t end = name.find('.', prefix.size());
  if (end == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(prefix.size(), end - prefix.size()));
  } catch (const std::exception&) {
    return -1;
  }
}

std::vector<int64_t> contiguousStrides(at::IntArrayRef sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= std::max<int64_t>(sizes[d], 1);
  }
  return strides;
}

// fsdp frees a unit by taking the memory from under its storage, which every tensor of the unit
// shares: the tensors (and whatever autograd saved of them) stay valid objects, and the next gather
// gives the same storage new memory. No view of a freed unit is made (views check their bounds).
void allocateStorage(const at::Tensor& tensor, int64_t bytes) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(storage->allocator()->allocate(bytes));
  storage->set_nbytes(bytes);
}

void freeStorage(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(storage->allocator()->allocate(0));
  storage->set_nbytes(0);
}

}  // namespace

struct ParameterShards::AccumulatorHooks {
  std::vector<decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()))> nodes;
  std::vector<uintptr_t> keys;
};

ParameterShards::ParameterShards(std::shared_ptr<DistributedGroup> group, std::shared_ptr<DecoderModel> model,
                                 std::vector<std::string> names, std::vector<at::Tensor> params, ShardingOptions options)
    : group_(std::move(group)), model_(std::move(model)), names_(std::move(names)), params_(std::move(params)),
      options_(options), lowPrecision_(model_->dtype() != at::kFloat), world_(group_->worldSize()), rank_(group_->rank()) {
  TORCH_CHECK(names_.size() == params_.size(), "sharded training needs one name per trainable tensor");
  TORCH_CHECK(options_.bucketBytes > 0, "the gradient bucket size must be positive");
  const bool fsdp = options_.strategy == ShardingStrategy::Fsdp;

  // Which tensors form each unit, in the forward's order, and the order of their reductions.
  std::vector<std::vector<size_t>> groups;
  if (!fsdp) {
    // Buckets in reverse order: the LM head and the last layers get their gradients first.
    std::vector<size_t> current;
    int64_t numel = 0;
    for (size_t k = params_.size(); k-- > 0;) {
      current.push_back(k);
      numel += params_[k].numel();
      if (numel * 4 >= options_.bucketBytes) {
        groups.push_back(std::move(current));
        current.clear();
        numel = 0;
      }
    }
    if (!current.empty()) groups.push_back(std::move(current));
    for (size_t u = 0; u < groups.size(); ++u) reductionOrder_.push_back(static_cast<int64_t>(u));
  } else {
    const int64_t layers = model_->spec().numLayers;
    const bool tied = model_->spec().tieWordEmbeddings;
    std::vector<size_t> embed, head;
    std::vector<std::vector<size_t>> perLayer(layers);
    for (size_t k = 0; k < params_.size(); ++k) {
      const int64_t layer = layerOfName(names_[k]);
      if (layer >= 0 && layer < layers) perLayer[layer].push_back(k);
      else if (!tied && names_[k].rfind("model.embed_tokens.", 0) == 0) embed.push_back(k);
      else head.push_back(k);  // the final norm, the LM head (and the embedding it is when tied)
    }
    if (!embed.empty()) {
      embedUnit_ = static_cast<int64_t>(groups.size());
      groups.push_back(embed);
    }
    layerUnit_.assign(layers, -1);
    for (int64_t i = 0; i < layers; ++i) {
      if (perLayer[i].empty()) continue;
      layerUnit_[i] = static_cast<int64_t>(groups.size());
      groups.push_back(perLayer[i]);
    }
    if (!head.empty()) {
      headUnit_ = static_cast<int64_t>(groups.size());
      groups.push_back(head);
    }
    // The order the gradients become final in: the LM head first, the layers top-down, the
    // embedding last (a tied head holds the embedding, so it is final only then).
    if (headUnit_ >= 0 && !tied) reductionOrder_.push_back(headUnit_);
    for (int64_t i = layers; i-- > 0;)
      if (layerUnit_[i] >= 0) reductionOrder_.push_back(layerUnit_[i]);
    if (embedUnit_ >= 0) reductionOrder_.push_back(embedUnit_);
    if (headUnit_ >= 0 && tied) reductionOrder_.push_back(headUnit_);
    group_->openSecondChannel();
  }

  at::NoGradGuard noGrad;
  const at::Device device = model_->device();
  const auto floats = at::TensorOptions().device(device).dtype(at::kFloat);
  unitOf_.assign(params_.size(), -1);
  std::vector<at::Tensor> segmentMoments;
  std::vector<bool> decays;
  for (auto& members : groups) {
    Unit unit;
    unit.params = members;
    for (size_t k : members) {
      unit.offsets.push_back(unit.numel);
      unit.numel += params_[k].numel();
      unitOf_[k] = static_cast<int64_t>(units_.size());
    }
    unit.shard = (unit.numel + world_ - 1) / world_;
    const at::ScalarType dtype = params_[members[0]].scalar_type();
    unit.full = at::zeros({unit.shard * world_}, at::TensorOptions().device(device).dtype(dtype));
    for (size_t j = 0; j < members.size(); ++j) {
      at::Tensor& param = params_[members[j]];
      TORCH_CHECK(param.scalar_type() == dtype, "sharded training: the tensors of one unit must share a dtype ('", names_[members[j]], "')");
      unit.full.narrow(0, unit.offsets[j], param.numel()).copy_(param.reshape({-1}));
      const std::vector<int64_t> sizes = param.sizes().vec();
      // From now on the tensor is a window on the unit's storage (its old storage is freed).
      param.set_(unit.full.storage(), unit.offsets[j], sizes, contiguousStrides(sizes));
    }
    const int64_t own = rank_ * unit.shard;
    // An fp32 zero2 model's master is its own slice of the weights (updated in place, then gathered).
    unit.master = !fsdp && !lowPrecision_ ? unit.full.narrow(0, own, unit.shard)
                                          : unit.full.narrow(0, own, unit.shard).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    if (fsdp) unit.paramShard = lowPrecision_ ? unit.full.narrow(0, own, unit.shard).clone() : unit.master;
    unit.grad = at::zeros({unit.shard}, floats);
    for (size_t j = 0; j < members.size(); ++j) {
      const int64_t begin = std::max(unit.offsets[j], own);
      const int64_t end = std::min(unit.offsets[j] + params_[members[j]].numel(), own + unit.shard);
      if (begin >= end) continue;
      Segment segment{members[j], begin - unit.offsets[j], end - begin, begin - own};
      segmentMasters_.push_back(unit.master.narrow(0, segment.shardOffset, segment.length));
      segmentGrads_.push_back(unit.grad.narrow(0, segment.shardOffset, segment.length));
      segmentParam_.push_back(segment.param);
      segmentStart_.push_back(segment.start);
      decays.push_back(params_[segment.param].dim() >= 2);  // norms and biases are not decayed
    }
    gatheredBytes_ += bytesOf(unit);
    units_.push_back(std::move(unit));
  }
  peakGatheredBytes_ = gatheredBytes_;
  optimizer_ = std::make_unique<AdamW>(segmentMasters_, options_.adamw, decays);
  hasGradient_.assign(params_.size(), false);
  presentAnywhere_.assign(params_.size(), false);

  if (!fsdp && !options_.overlapBackward) return;
  hooks_ = std::make_unique<AccumulatorHooks>();
  for (size_t k = 0; k < params_.size(); ++k) {
    TORCH_CHECK(params_[k].requires_grad(), "sharded training needs trainable tensors ('", names_[k], "' takes no gradient)");
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[k]);
    // Runs after this backward's gradient was added into params_[k].grad(): nothing adds to it
    // any more in this micro-batch.
    hooks_->keys.push_back(accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (armed_) onGradientFinal(k);
          return outputs;
        })));
    hooks_->nodes.push_back(std::move(accumulator));
  }
}

ParameterShards::~ParameterShards() {
  model_->setForwardHooks(nullptr);
  if (!hooks_) return;
  for (size_t k = 0; k < hooks_->nodes.size(); ++k) hooks_->nodes[k]->del_post_hook(hooks_->keys[k]);
}

int64_t ParameterShards::bytesOf(const Unit& unit) const {
  return unit.shard * world_ * static_cast<int64_t>(unit.full.element_size());
}

double ParameterShards::timed(const std::function<void()>& wait) {
  const auto start = std::chrono::steady_clock::now();
  wait();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report_.seconds += seconds;
  return seconds;
}

// ---- gradients -------------------------------------------------------------------------------

void ParameterShards::beginMicroBatch() {
  TORCH_CHECK(!inMicroBatch_, "sharded training: a micro-batch is already in progress");
  inMicroBatch_ = true;
  if (options_.strategy == ShardingStrategy::Fsdp) {
    if (!stepStarted_) releaseAllForStep();
    nextBackwardGather_ = static_cast<int64_t>(layerUnit_.size()) - 1;
    model_->setForwardHooks(this);
  }
  armed_ = true;
  nextReduction_ = 0;
  for (auto& unit : units_) {
    unit.pending = static_cast<int64_t>(unit.params.size());
    unit.launched = false;
  }
}

void ParameterShards::onGradientFinal(size_t param) {
  const int64_t u = unitOf_[param];
  if (--units_[u].pending == 0 && options_.strategy == ShardingStrategy::Fsdp) release(u);
  if (!options_.overlapBackward) return;
  const int64_t before = report_.reduceScatters;
  launchReadyReductions();
  report_.reduceScattersDuringBackward += report_.reduceScatters - before;
}

void ParameterShards::launchReadyReductions() {
  while (nextReduction_ < reductionOrder_.size() && units_[reductionOrder_[nextReduction_]].pending == 0)
    launchReduction(units_[reductionOrder_[nextReduction_++]]);
}

void ParameterShards::launchReduction(Unit& unit) {
  at::NoGradGuard noGrad;
  // Zeros: the padding, and tensors without a gradient on this rank, add nothing.
  unit.flatGrad = at::zeros({unit.shard * world_}, unit.grad.options());
  for (size_t j = 0; j < unit.params.size(); ++j) {
    const size_t k = unit.params[j];
    at::Tensor& grad = params_[k].mutable_grad();
    if (!grad.defined()) continue;
    unit.flatGrad.narrow(0, unit.offsets[j], params_[k].numel()).copy_(grad.reshape({-1}));
    hasGradient_[k] = true;
    grad = at::Tensor();  // its memory goes back now: the unit's share of it lives in the shard
  }
  unit.reduction = group_->reduceScatterAsync(unit.flatGrad);
  unit.launched = true;
  ++report_.reduceScatters;
  report_.gradientBytes += unit.flatGrad.numel() * 4;
}

void ParameterShards::waitReductions() {
  at::NoGradGuard noGrad;
  for (size_t n = 0; n < reductionOrder_.size(); ++n) {
    Unit& unit = units_[reductionOrder_[n]];
    if (!unit.launched) continue;
    timed([&] {
      group_->wait(unit.reduction.work, "the gradient reduce-scatter (unit " + std::to_string(n + 1) + " of " +
                                            std::to_string(reductionOrder_.size()) + ")");
    });
    unit.grad.add_(unit.reduction.result);
    unit.reduction = DistributedGroup::ReduceScatter();
    unit.flatGrad = at::Tensor();
    unit.launched = false;
  }
}

void ParameterShards::endMicroBatch() {
  TORCH_CHECK(inMicroBatch_, "sharded training: endMicroBatch() without beginMicroBatch()");
  model_->setForwardHooks(nullptr);
  armed_ = false;
  if (options_.strategy == ShardingStrategy::Fsdp) {
    // The backward's gathers it did not issue (none ran, or it stopped short), in the same order,
    // so the ranks' parameter channels stay paired, each freed as the backward would; then
    // everything still gathered is freed.
    for (int64_t layer = nextBackwardGather_; layer >= 0; --layer) {
      backwardGather(layer);
      release(layerUnit_[layer]);
    }
    for (int64_t u = 0; u < static_cast<int64_t>(units_.size()); ++u) release(u);
  }
  while (nextReduction_ < reductionOrder_.size()) launchReduction(units_[reductionOrder_[nextReduction_++]]);
  waitReductions();
  inMicroBatch_ = false;
}

void ParameterShards::abandonMicroBatch() {
  model_->setForwardHooks(nullptr);
  armed_ = false;
  inMicroBatch_ = false;
}

void ParameterShards::paddingMicroBatch() {
  beginMicroBatch();
  if (options_.strategy == ShardingStrategy::Fsdp) {
    // The forward's gathers and frees, in the forward's order, without computing anything.
    beforeEmbedding();
    afterEmbedding();
    for (int64_t i = 0; i < static_cast<int64_t>(layerUnit_.size()); ++i) {
      beforeLayer(i);
      release(layerUnit_[i]);
    }
    beforeFinalNorm();
  }
  endMicroBatch();
}

ShardingReport ParameterShards::finishStep() {
  TORCH_CHECK(!inMicroBatch_, "sharded training: finishStep() inside a micro-batch");
  // Which tensors have a gradient on some rank: AdamW leaves the others alone, as one process would.
  const auto floats = at::TensorOptions().dtype(at::kFloat);
  at::Tensor flags = at::empty({static_cast<int64_t>(params_.size())}, floats);
  float* f = flags.data_ptr<float>();
  for (size_t k = 0; k < params_.size(); ++k) f[k] = hasGradient_[k] ? 1.0f : 0.0f;
  std::vector<at::Tensor> presence{flags.to(model_->device())};
  timed([&] { group_->allReduce(presence, ReduceOp::Sum, "the gradient presence all-reduce"); });
  const at::Tensor anywhere = presence[0].cpu();
  const float* a = anywhere.data_ptr<float>();
  for (size_t k = 0; k < params_.size(); ++k) presentAnywhere_[k] = a[k] > 0;
  return report_;
}

// ---- the update ------------------------------------------------------------------------------

ParameterShards::StepOutcome ParameterShards::step(double lr, double maxGradNorm) {
  TORCH_CHECK(!inMicroBatch_, "sharded training: step() inside a micro-batch");
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < segmentMasters_.size(); ++i) {
    const bool present = presentAnywhere_[segmentParam_[i]];
    segmentMasters_[i].mutable_grad() = present ? segmentGrads_[i] : at::Tensor();
    if (present) grads.push_back(segmentGrads_[i]);
  }
  // The global norm: every rank's sum of squares over its shards, summed over the ranks.
  at::Tensor squares = grads.empty() ? at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(model_->device()))
                                     : at::stack(at::_foreach_norm(grads, 2)).to(at::kDouble).pow(2).sum().reshape({1});
  std::vector<at::Tensor> total{squares};
  group_->allReduce(total, ReduceOp::Sum, "the gradient norm all-reduce");
  StepOutcome outcome;
  outcome.gradNorm = std::sqrt(total[0].item<double>());
  if (maxGradNorm > 0 && std::isfinite(outcome.gradNorm) && outcome.gradNorm > maxGradNorm && !grads.empty())
    at::_foreach_mul_(grads, maxGradNorm / (outcome.gradNorm + 1e-6));
  // Every rank sees the same norm, so all take this branch or none does.
  if (!std::isfinite(outcome.gradNorm)) {
    outcome.skipped = true;
  } else {
    auto agree = [this](bool finite) {
      std::vector<at::Tensor> flag{at::full({1}, finite ? 1.0 : 0.0, at::TensorOptions().dtype(at::kFloat).device(model_->device()))};
      group_->allReduce(flag, ReduceOp::Min, "the agreement on a finite update");
      return flag[0].item<float>() > 0;
    };
    outcome.skipped = !optimizer_->step(lr, outcome.gradNorm, agree);
  }
  if (!outcome.skipped) {
    for (auto& unit : units_)
      if (options_.strategy == ShardingStrategy::Fsdp && lowPrecision_) unit.paramShard.copy_(unit.master);
    if (options_.strategy == ShardingStrategy::Zero2) {
      const auto start = std::chrono::steady_clock::now();
      gatherAll("the parameter all-gather after the update");
      outcome.gatherSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (const auto& unit : units_) outcome.gatherBytes += bytesOf(unit);
    }
  }
  if (options_.strategy == ShardingStrategy::Fsdp && stepStarted_) {
    const auto start = std::chrono::steady_clock::now();
    for (const auto& unit : units_) outcome.gatherBytes += bytesOf(unit);
    zeroGrad();  // gathers the model for what comes next (generation, log-probs, a save)
    outcome.gatherSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } else {
    zeroGrad();
  }
  outcome.steps = optimizer_->steps();
  return outcome;
}

void ParameterShards::zeroGrad() {
  TORCH_CHECK(!inMicroBatch_, "sharded training: zeroGrad() inside a micro-batch");
  at::NoGradGuard noGrad;
  for (auto& unit : units_) unit.grad.zero_();
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  for (auto& m : segmentMasters_)
    if (m.grad().defined()) m.mutable_grad() = at::Tensor();
  hasGradient_.assign(params_.size(), false);
  presentAnywhere_.assign(params_.size(), false);
  report_ = ShardingReport();
  if (options_.strategy == ShardingStrategy::Fsdp && stepStarted_) {
    gatherAll("the parameter all-gather for generation");
    stepStarted_ = false;
  }
}

void ParameterShards::gatherAll(const std::string& what) {
  at::NoGradGuard noGrad;
  const bool fsdp = options_.strategy == ShardingStrategy::Fsdp;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& unit : units_) {
    if (fsdp) {
      waitGather(unit);
      if (!unit.resident) {
        allocateStorage(unit.full, bytesOf(unit));
        unit.resident = true;
        gatheredBytes_ += bytesOf(unit);  // not a training peak: the whole model, for what comes after the step
      }
      works.push_back(group_->allGatherAsync(unit.full, unit.paramShard, 1));
    } else {
      at::Tensor own = unit.full.narrow(0, rank_ * unit.shard, unit.shard);
      if (own.data_ptr() != unit.master.data_ptr()) own.copy_(unit.master);  // to the model's dtype
      works.push_back(group_->allGatherAsync(unit.full, own, 0));
    }
  }
  for (auto& work : works) group_->wait(work, what);
}

// ---- fsdp: gathering and freeing -------------------------------------------------------------

void ParameterShards::issueGather(int64_t u) {
  Unit& unit = units_[u];
  if (unit.resident) return;
  allocateStorage(unit.full, bytesOf(unit));
  unit.resident = true;
  gatheredBytes_ += bytesOf(unit);
  peakGatheredBytes_ = std::max(peakGatheredBytes_, gatheredBytes_);
  unit.gather = group_->allGatherAsync(unit.full, unit.paramShard, 1);
  ++report_.gathers;
  report_.gatherBytes += bytesOf(unit);
}

void ParameterShards::waitGather(Unit& unit) {
  if (!unit.gather) return;
  timed([&] { group_->wait(unit.gather, "the parameter all-gather"); });
  unit.gather.reset();
}

void ParameterShards::ensureGathered(int64_t u) {
  if (u < 0) return;
  issueGather(u);
  waitGather(units_[u]);
}

void ParameterShards::prefetch(int64_t u) {
  if (u >= 0 && options_.overlapBackward) issueGather(u);
}

void ParameterShards::release(int64_t u) {
  if (u < 0) return;
  Unit& unit = units_[u];
  if (!unit.resident) return;
  waitGather(unit);
  freeStorage(unit.full);
  unit.resident = false;
  gatheredBytes_ -= bytesOf(unit);
}

void ParameterShards::releaseAllForStep() {
  for (int64_t u = 0; u < static_cast<int64_t>(units_.size()); ++u) release(u);
  peakGatheredBytes_ = gatheredBytes_;
  stepStarted_ = true;
}

void ParameterShards::issueBackwardGathersThrough(int64_t layer) {
  for (; nextBackwardGather_ >= std::max<int64_t>(layer, 0); --nextBackwardGather_) {
    const int64_t u = layerUnit_[nextBackwardGather_];
    if (u >= 0) issueGather(u);
  }
}

void ParameterShards::backwardGather(int64_t layer) {
  issueBackwardGathersThrough(layer);
  if (options_.overlapBackward && layer > 0) issueBackwardGathersThrough(layer - 1);  // the next one down
  ensureGathered(layerUnit_[layer]);
}

void ParameterShards::beforeEmbedding() {
  // The unit holding the embedding: its own, or (tied) the LM head's.
  ensureGathered(embedUnit_ >= 0 ? embedUnit_ : (model_->spec().tieWordEmbeddings ? headUnit_ : -1));
  if (!layerUnit_.empty()) prefetch(layerUnit_[0]);
}

void ParameterShards::afterEmbedding() {
  release(embedUnit_);  // the embedding's backward reads only the token ids
}

void ParameterShards::beforeLayer(int64_t layer) {
  ensureGathered(layerUnit_[layer]);
  int64_t next = -1;
  for (int64_t j = layer + 1; j < static_cast<int64_t>(layerUnit_.size()) && next < 0; ++j) next = layerUnit_[j];
  prefetch(next >= 0 ? next : headUnit_);
}

at::Tensor ParameterShards::afterLayer(int64_t layer, const at::Tensor& out) {
  release(layerUnit_[layer]);
  if (out.requires_grad() && layerUnit_[layer] >= 0)
    out.register_hook([this, layer](const at::Tensor&) { backwardGather(layer); });
  return out;
}

void ParameterShards::beforeFinalNorm() { ensureGathered(headUnit_); }

// ---- state -----------------------------------------------------------------------------------

std::vector<std::pair<std::string, at::Tensor>> ParameterShards::stateTensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < segmentMasters_.size(); ++i) {
    const std::string& name = names_[segmentParam_[i]];
    out.emplace_back("exp_avg." + name, optimizer_->firstMoments()[i]);
    out.emplace_back("exp_avg_sq." + name, optimizer_->secondMoments()[i]);
    if (lowPrecision_) out.emplace_back("master." + name, segmentMasters_[i]);
  }
  return out;
}

std::vector<int64_t> ParameterShards::stateStarts() const {
  std::vector<int64_t> out;
  for (int64_t start : segmentStart_)
    for (int n = 0; n < (lowPrecision_ ? 3 : 2); ++n) out.push_back(start);
  return out;
}

StatePieces::StatePieces(const std::vector<StatePiece>& pieces) {
  for (const auto& piece : pieces) byName_[piece.record.name].push_back(piece);
}

void StatePieces::read(const std::string& name, at::Tensor target, int64_t start, const std::string& who) {
  at::NoGradGuard noGrad;
  const int64_t length = target.numel();
  int64_t covered = 0;
  auto found = byName_.find(name);
  if (found != byName_.end()) {
    for (const StatePiece& piece : found->second) {
      int64_t pieceLength = 1;
      for (int64_t d : piece.record.shape) pieceLength *= d;
      const int64_t begin = std::max(start, piece.start), end = std::min(start + length, piece.start + pieceLength);
      if (begin >= end) continue;
      TORCH_CHECK(piece.record.dtype == at::kFloat, piece.record.file, ": optimizer state '", name, "' is not F32");
      // Only the bytes needed: a range of a flat F32 tensor is a range of the file.
      TensorRecord part = piece.record;
      part.shape = {end - begin};
      part.offset += (begin - piece.start) * 4;
      part.byteLength = (end - begin) * 4;
      target.narrow(0, begin - start, end - begin).copy_(reader_.read(part));
      covered += end - begin;
    }
  }
  TORCH_CHECK(covered == length, "optimizer state: '", name, "' holds ", covered, " of the ", length, " values [", start, ", ",
              start + length, ") ", who, " needs", found == byName_.end() ? " (the tensor is missing)" : "",
              "; was it saved by a run of another model?");
}

void ParameterShards::restore(const std::vector<StatePiece>& pieces, int64_t steps) {
  StatePieces state(pieces);
  const std::string who = "rank " + std::to_string(rank_) + " of " + std::to_string(world_);
  at::NoGradGuard noGrad;
  std::vector<at::Tensor> first, second;
  for (size_t i = 0; i < segmentMasters_.size(); ++i) {
    const std::string& name = names_[segmentParam_[i]];
    const int64_t start = segmentStart_[i];
    first.push_back(at::empty_like(segmentMasters_[i]));
    second.push_back(at::empty_like(segmentMasters_[i]));
    state.read("exp_avg." + name, first.back(), start, who);
    state.read("exp_avg_sq." + name, second.back(), start, who);
    if (lowPrecision_) state.read("master." + name, segmentMasters_[i], start, who);
  }
  optimizer_->restore(steps, first, second);
  // bf16/fp16: the exact masters were saved; the model's weights become their rounding again.
  if (lowPrecision_) {
    for (auto& unit : units_)
      if (options_.strategy == ShardingStrategy::Fsdp) unit.paramShard.copy_(unit.master);
    gatherAll("the parameter all-gather after a resume");
  }
}

ShardMemory ParameterShards::memory() const {
  ShardMemory out;
  out.units = static_cast<int64_t>(units_.size());
  for (const auto& unit : units_) {
    out.masterBytes += unit.master.numel() * 4;
    out.gradientBytes += unit.grad.numel() * 4;
    if (unit.resident) out.parameterBytes += bytesOf(unit);
    if (unit.paramShard.defined() && !unit.paramShard.is_same(unit.master))
      out.parameterBytes += unit.paramShard.numel() * static_cast<int64_t>(unit.paramShard.element_size());
    out.largestUnitBytes = std::max(out.largestUnitBytes, bytesOf(unit));
  }
  for (const auto& m : optimizer_->firstMoments()) out.optimizerBytes += m.numel() * 4;
  for (const auto& v : optimizer_->secondMoments()) out.optimizerBytes += v.numel() * 4;
  out.peakGatheredBytes = peakGatheredBytes_;
  return out;
}

}  // namespace octo
