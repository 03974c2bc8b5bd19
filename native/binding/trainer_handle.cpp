#include "binding/trainer_handle.h"

#include "binding/addon_data.h"
#include "binding/model_handle.h"
#include "binding/process_group_handle.h"
#include "core/gradient_reducer.h"
#include "core/parameter_shards.h"

namespace octo::binding {

namespace {

Objective toObjective(const Napi::Value& value) {
  const std::string name = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (name == "policy") return Objective::Policy;
  if (name == "supervised") return Objective::Supervised;
  throw Napi::TypeError::New(value.Env(), "objective must be 'policy' or 'supervised'");
}

// {inputIds, batch, length, attentionMask, lossMask, klMask, advantages, oldLogprobs, refLogprobs?}
MicroBatch toMicroBatch(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "micro-batch");
  const int64_t B = getInt(o, "batch", "batch"), T = getInt(o, "length", "batch");
  if (B <= 0 || T < 2) throw Napi::RangeError::New(value.Env(), "a micro-batch needs batch >= 1 and length >= 2");
  MicroBatch b;
  // Raw copies; Trainer::accumulate converts them (int32 -> int64, uint8 -> bool) on its thread.
  b.inputIds = int32ArrayToTensor(o.Get("inputIds"), "batch.inputIds", {B, T});
  b.attentionMask = uint8ArrayToTensor(o.Get("attentionMask"), "batch.attentionMask", {B, T});
  b.lossMask = float32ArrayToTensor(o.Get("lossMask"), "batch.lossMask", {B, T});
  b.klMask = float32ArrayToTensor(o.Get("klMask"), "batch.klMask", {B, T});
  b.advantages = float32ArrayToTensor(o.Get("advantages"), "batch.advantages", {B, T});
  b.oldLogprobs = float32ArrayToTensor(o.Get("oldLogprobs"), "batch.oldLogprobs", {B, T});
  if (!o.Get("refLogprobs").IsUndefined()) b.refLogprobs = float32ArrayToTensor(o.Get("refLogprobs"), "batch.refLogprobs", {B, T});
  return b;
}

}  // namespace

Napi::Function TrainerHandle::define(Napi::Env env) {
  return DefineClass(env, "Trainer",
                     {
                         InstanceMethod<&TrainerHandle::enableDataParallel>("enableDataParallel"),
                         InstanceMethod<&TrainerHandle::accumulate>("accumulate"),
                         InstanceMethod<&TrainerHandle::reduceGradients>("reduceGradients"),
                         InstanceMethod<&TrainerHandle::accumulatePadding>("accumulatePadding"),
                         InstanceMethod<&TrainerHandle::shardMemory>("shardMemory"),
                         InstanceMethod<&TrainerHandle::step>("step"),
                         InstanceMethod<&TrainerHandle::zeroGrad>("zeroGrad"),
                         InstanceMethod<&TrainerHandle::stateTensors>("stateTensors"),
                         InstanceMethod<&TrainerHandle::saveState>("saveState"),
                         InstanceMethod<&TrainerHandle::loadState>("loadState"),
                     });
}

TrainerHandle::TrainerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerHandle>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&]() {
    std::shared_ptr<DecoderModel> model = ModelHandle::unwrap(info[0]);
    Napi::Object o = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    TrainerOptions options;
    options.maxGradNorm = optionalNumber(o, "maxGradNorm", options.maxGradNorm);
    options.activationCheckpointing = optionalBool(o, "activationCheckpointing", false);
    options.logprobChunkSize = requireInt(o, "logprobChunkSize");  // lib/engine/trainer.ts passes LOGPROB_CHUNK_SIZE by default
    options.temperature = optionalNumber(o, "temperature", 1.0);
    options.adamw.beta1 = optionalNumber(o, "beta1", options.adamw.beta1);
    options.adamw.beta2 = optionalNumber(o, "beta2", options.adamw.beta2);
    options.adamw.eps = optionalNumber(o, "eps", options.adamw.eps);
    options.adamw.weightDecay = optionalNumber(o, "weightDecay", options.adamw.weightDecay);
    Trainer::checkTrainable(*model);  // what can be refused is refused here, synchronously
    state_ = std::make_shared<State>();
    state_->device = model->device();
    // The masters and AdamW moments are allocated on the engine thread, queued before any call
    // on this trainer, so `new Trainer` does no tensor work on the JS thread.
    postEngineJob(state_->device, [state = state_, model, options]() {
      try {
        state->trainer = std::make_unique<Trainer>(model, options);
      } catch (const std::exception& e) {
        state->failure = shortMessage(e);
      }
    });
    return 0;
  });
}

TrainerHandle::~TrainerHandle() {
  // The optimizer state is freed on the engine thread, after the calls still queued there.
  if (!state_) return;
  const at::Device device = state_->device;  // read before the move below
  postEngineJob(device, [state = std::move(state_)]() mutable { state.reset(); });
}

Trainer& TrainerHandle::State::get() {
  TORCH_CHECK(failure.empty(), "this trainer could not be created: ", failure);
  TORCH_CHECK(trainer, "this trainer was never created");
  return *trainer;
}

// enableDataParallel(group, {bucketBytes, overlapBackward, strategy?: "ddp" | "zero2" | "fsdp"}) ->
// Promise<void>: broadcasts rank 0's weights (a collective: every rank calls it)
Napi::Value TrainerHandle::enableDataParallel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::shared_ptr<DistributedGroup> group = ProcessGroupHandle::unwrap(info[0]);
    Napi::Object o = requireObject(info[1], "data-parallel options");
    GradientReducerOptions options;
    options.bucketBytes = requireInt(o, "bucketBytes");
    options.overlapBackward = requireBool(o, "overlapBackward");
    const std::string strategy = o.Get("strategy").IsString() ? o.Get("strategy").As<Napi::String>().Utf8Value() : "ddp";
    if (strategy != "ddp" && strategy != "zero2" && strategy != "fsdp")
      throw Napi::TypeError::New(env, "strategy must be 'ddp', 'zero2' or 'fsdp'");
    ShardingOptions sharding;
    sharding.strategy = strategy == "fsdp" ? ShardingStrategy::Fsdp : ShardingStrategy::Zero2;
    sharding.bucketBytes = options.bucketBytes;
    sharding.overlapBackward = options.overlapBackward;
    auto state = state_;
    return PromiseWorker<bool>::start(
        env, state->device,
        [state, group, options, sharding, strategy]() {
          if (strategy == "ddp") state->get().enableDataParallel(group, options);
          else state->get().enableSharded(group, sharding);
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// accumulate(batch, objective, lossOptions, normalizers, lastOfStep = true) -> Promise<{loss, finite, stats}>
Napi::Value TrainerHandle::accumulate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    MicroBatch batch = toMicroBatch(info[0]);
    Objective objective = toObjective(info[1]);
    PolicyLossOptions lossOptions = toPolicyLossOptions(info[2]);
    LossNormalizers normalizers = toNormalizers(info[3]);
    const bool lastOfStep = info.Length() < 5 || info[4].IsUndefined() || info[4].ToBoolean().Value();
    auto state = state_;
    return PromiseWorker<AccumulateResult>::start(
        env, state->device,
        [state, batch, objective, lossOptions, normalizers, lastOfStep]() {
          return state->get().accumulate(batch, objective, lossOptions, normalizers, lastOfStep);
        },
        [](Napi::Env env, AccumulateResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", r.loss);
          out.Set("finite", r.finite);
          out.Set("stats", lossStatsToJs(env, r.stats));
          return out;
        });
  });
}

// reduceGradients() -> Promise<{seconds, buckets, bucketsDuringBackward, bytes}> (data-parallel)
Napi::Value TrainerHandle::reduceGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto state = state_;
    return PromiseWorker<ReduceReport>::start(
        env, state->device, [state]() { return state->get().reduceGradients(); },
        [](Napi::Env env, ReduceReport& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", r.seconds);
          out.Set("buckets", static_cast<double>(r.buckets));
          out.Set("bucketsDuringBackward", static_cast<double>(r.bucketsDuringBackward));
          out.Set("bytes", static_cast<double>(r.bytes));
          out.Set("gathers", static_cast<double>(r.gathers));
          out.Set("gatherBytes", static_cast<double>(r.gatherBytes));
          return out;
        });
  });
}

// accumulatePadding() -> Promise<void> (sharded): a micro-batch's collectives for a rank that has none left
Napi::Value TrainerHandle::accumulatePadding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto state = state_;
    return PromiseWorker<bool>::start(
        env, state->device,
        [state]() {
          state->get().accumulatePadding();
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// shardMemory() -> Promise<{masterBytes, optimizerBytes, gradientBytes, parameterBytes, peakGatheredBytes, largestUnitBytes, units}>
Napi::Value TrainerHandle::shardMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto state = state_;
    return PromiseWorker<ShardMemory>::start(
        env, state->device, [state]() { return state->get().shardMemory(); },
        [](Napi::Env env, ShardMemory& m) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("masterBytes", static_cast<double>(m.masterBytes));
          out.Set("optimizerBytes", static_cast<double>(m.optimizerBytes));
          out.Set("gradientBytes", static_cast<double>(m.gradientBytes));
          out.Set("parameterBytes", static_cast<double>(m.parameterBytes));
          out.Set("peakGatheredBytes", static_cast<double>(m.peakGatheredBytes));
          out.Set("largestUnitBytes", static_cast<double>(m.largestUnitBytes));
          out.Set("units", static_cast<double>(m.units));
          return out;
        });
  });
}

// step(lr) -> Promise<{gradNorm, skipped, step}>
Napi::Value TrainerHandle::step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const double lr = info[0].As<Napi::Number>().DoubleValue();
    auto state = state_;
    return PromiseWorker<StepResult>::start(
        env, state->device, [state, lr]() { return state->get().step(lr); },
        [](Napi::Env env, StepResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("gradNorm", r.gradNorm);
          out.Set("skipped", r.skipped);
          out.Set("step", static_cast<double>(r.step));
          out.Set("gatheredBytes", static_cast<double>(r.gatheredBytes));
          out.Set("gatherSeconds", r.gatherSeconds);
          return out;
        });
  });
}

// zeroGrad() -> Promise<void>
Napi::Value TrainerHandle::zeroGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto state = state_;
    return PromiseWorker<bool>::start(
        env, state->device,
        [state]() {
          state->get().zeroGrad();
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// stateTensors() -> Promise<[{name, shape, start?}]>: the optimizer state saveState writes, in order
// (fp32); sharded: this rank's part of each tensor, `start` its first element in the flattened tensor
Napi::Value TrainerHandle::stateTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto state = state_;
    using Result = std::pair<std::vector<NamedShape>, std::vector<int64_t>>;
    return PromiseWorker<Result>::start(
        env, state->device,
        [state]() {
          Trainer& trainer = state->get();
          return Result(tensorShapes(trainer.stateTensors()), trainer.stateStarts());
        },
        [](Napi::Env env, Result& result) -> Napi::Value {
          Napi::Array out = namedShapesToJs(env, result.first);
          for (size_t i = 0; i < result.second.size(); ++i)
            out.Get(static_cast<uint32_t>(i)).As<Napi::Object>().Set("start", static_cast<double>(result.second[i]));
          return out;
        });
  });
}

// saveState(path, header: Buffer) -> Promise<void>: the stateTensors() in order, as F32
Napi::Value TrainerHandle::saveState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    Napi::Buffer<char> headerBuffer = info[1].As<Napi::Buffer<char>>();
    std::string header(headerBuffer.Data(), headerBuffer.Length());
    auto state = state_;
    return PromiseWorker<bool>::start(
        env, state->device,
        [state, path, header]() {
          std::vector<at::Tensor> tensors;
          for (auto& [name, tensor] : state->get().stateTensors()) tensors.push_back(tensor);
          writeSafetensors(path, header, tensors, std::vector<at::ScalarType>(tensors.size(), at::kFloat));
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// loadState(records, steps) -> Promise<void>: records validated by lib/engine/safetensors.ts; a
// record with `start` holds elements [start, start + numel) of its flattened tensor (a shard's part)
Napi::Value TrainerHandle::loadState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<TensorRecord> records = toTensorRecords(info[0]);
    std::vector<StatePiece> pieces(records.size());
    Napi::Array array = info[0].As<Napi::Array>();
    bool partial = false;
    for (uint32_t i = 0; i < records.size(); ++i) {
      Napi::Value start = array.Get(i).As<Napi::Object>().Get("start");
      pieces[i].start = start.IsNumber() ? start.As<Napi::Number>().Int64Value() : 0;
      partial = partial || start.IsNumber();
      pieces[i].record = records[i];
    }
    const int64_t steps = info[1].As<Napi::Number>().Int64Value();
    auto state = state_;
    return PromiseWorker<bool>::start(
        env, state->device,
        [state, records, pieces, partial, steps]() {
          Trainer& trainer = state->get();
          if (partial || trainer.sharded()) {
            trainer.restoreStatePieces(pieces, steps);
            return true;
          }
          SafetensorsReader reader;
          std::unordered_map<std::string, at::Tensor> tensors;
          for (const auto& r : records) tensors.emplace(r.name, reader.read(r).to(at::kFloat));
          trainer.restoreState(tensors, steps);
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

}  // namespace octo::binding
