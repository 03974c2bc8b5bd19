#include "binding/trainer_handle.h"

#include "binding/addon_data.h"
#include "binding/model_handle.h"
#include "binding/process_group_handle.h"
#include "core/bench_kernels.h"
#include "core/engine_info.h"
#include "core/gradient_reducer.h"
#include "core/memory_tracker.h"
#include "core/reference_optimizer.h"

namespace octo::binding {

namespace {

PolicyLossOptions toPolicyLossOptions(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "loss options");
  PolicyLossOptions p;
  p.ratioLevel = parseRatioLevel(getOptionalString(o, "ratioLevel", "token"));
  p.clipLow = getOptionalNumber(o, "clipLow", p.clipLow);
  p.clipHigh = getOptionalNumber(o, "clipHigh", p.clipHigh);
  p.dualClip = getOptionalNumber(o, "dualClip", p.dualClip);
  p.klEstimator = parseKlEstimator(getOptionalString(o, "klEstimator", "k3"));
  p.klCoef = getOptionalNumber(o, "klCoef", p.klCoef);
  p.entropyCoef = getOptionalNumber(o, "entropyCoef", p.entropyCoef);
  p.aggregation = parseLossAggregation(getOptionalString(o, "aggregation", "token-mean"));
  return p;
}

LossNormalizers toNormalizers(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "normalizers");
  LossNormalizers n;
  n.lossTokens = getNumber(o, "lossTokens", "normalizers");
  n.klTokens = getNumber(o, "klTokens", "normalizers");
  n.sequences = getNumber(o, "sequences", "normalizers");
  n.maxLength = getOptionalNumber(o, "maxLength", 1.0);
  return n;
}

Napi::Object statsToJs(Napi::Env env, const PolicyLossStats& s) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("policyLoss", s.policyLoss);
  out.Set("klLoss", s.klLoss);
  out.Set("entropyLoss", s.entropyLoss);
  out.Set("lossTokens", s.lossTokens);
  out.Set("klTokens", s.klTokens);
  out.Set("clippedTokens", s.clippedTokens);
  out.Set("dualClippedTokens", s.dualClippedTokens);
  out.Set("ratioSum", s.ratioSum);
  out.Set("klSum", s.klSum);
  out.Set("entropySum", s.entropySum);
  return out;
}

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
  b.inputIds = int32ArrayToTensor(o.Get("inputIds"), "batch.inputIds", {B, T}).to(at::kLong);
  b.attentionMask = uint8ArrayToTensor(o.Get("attentionMask"), "batch.attentionMask", {B, T}) != 0;
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
    options.maxGradNorm = getOptionalNumber(o, "maxGradNorm", options.maxGradNorm);
    options.activationCheckpointing = getOptionalBool(o, "activationCheckpointing", false);
    options.logprobChunkSize = static_cast<int64_t>(getOptionalNumber(o, "logprobChunkSize", 1024));
    options.temperature = getOptionalNumber(o, "temperature", 1.0);
    options.adamw.beta1 = getOptionalNumber(o, "beta1", options.adamw.beta1);
    options.adamw.beta2 = getOptionalNumber(o, "beta2", options.adamw.beta2);
    options.adamw.eps = getOptionalNumber(o, "eps", options.adamw.eps);
    options.adamw.weightDecay = getOptionalNumber(o, "weightDecay", options.adamw.weightDecay);
    state_ = std::make_shared<State>();
    state_->trainer = std::make_unique<Trainer>(model, options);
    return 0;
  });
}

// enableDataParallel(group, {bucketBytes, overlapBackward}) -> Promise<void>: broadcasts rank 0's
// weights (a collective: every rank calls it)
Napi::Value TrainerHandle::enableDataParallel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::shared_ptr<DistributedGroup> group = ProcessGroupHandle::unwrap(info[0]);
    Napi::Object o = requireObject(info[1], "data-parallel options");
    GradientReducerOptions options;
    options.bucketBytes = getInt(o, "bucketBytes", "options");
    options.overlapBackward = getBool(o, "overlapBackward", "options");
    auto state = state_;
    return PromiseWorker<bool>::start(
        env,
        [state, group, options]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          state->trainer->enableDataParallel(group, options);
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
        env,
        [state, batch, objective, lossOptions, normalizers, lastOfStep]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          return state->trainer->accumulate(batch, objective, lossOptions, normalizers, lastOfStep);
        },
        [](Napi::Env env, AccumulateResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", r.loss);
          out.Set("finite", r.finite);
          out.Set("stats", statsToJs(env, r.stats));
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
        env,
        [state]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          return state->trainer->reduceGradients();
        },
        [](Napi::Env env, ReduceReport& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", r.seconds);
          out.Set("buckets", static_cast<double>(r.buckets));
          out.Set("bucketsDuringBackward", static_cast<double>(r.bucketsDuringBackward));
          out.Set("bytes", static_cast<double>(r.bytes));
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
        env,
        [state, lr]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          return state->trainer->step(lr);
        },
        [](Napi::Env env, StepResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("gradNorm", r.gradNorm);
          out.Set("skipped", r.skipped);
          out.Set("step", static_cast<double>(r.step));
          return out;
        });
  });
}

Napi::Value TrainerHandle::zeroGrad(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->trainer->zeroGrad();
  return info.Env().Undefined();
}

// stateTensors() -> [{name, shape}]: the optimizer state saveState writes, in order (fp32)
Napi::Value TrainerHandle::stateTensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(state_->mutex);
  return namedShapesToJs(env, tensorShapes(state_->trainer->stateTensors()));
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
        env,
        [state, path, header]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          std::vector<at::Tensor> tensors;
          for (auto& [name, tensor] : state->trainer->stateTensors()) tensors.push_back(tensor);
          writeSafetensors(path, header, tensors, std::vector<at::ScalarType>(tensors.size(), at::kFloat));
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// loadState(records, steps) -> Promise<void>: records validated by lib/engine/safetensors.ts
Napi::Value TrainerHandle::loadState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<TensorRecord> records = toTensorRecords(info[0]);
    const int64_t steps = info[1].As<Napi::Number>().Int64Value();
    auto state = state_;
    return PromiseWorker<bool>::start(
        env,
        [state, records, steps]() {
          SafetensorsReader reader;
          std::unordered_map<std::string, at::Tensor> tensors;
          for (const auto& r : records) tensors.emplace(r.name, reader.read(r).to(at::kFloat));
          std::lock_guard<std::mutex> lock(state->mutex);
          state->trainer->restoreState(tensors, steps);
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

namespace {

struct LogprobsOpResult {
  at::Tensor logprobs, entropy, gradHidden, gradWeight;
};

// ops.tokenLogprobs({hidden, weight, targets, tokens, hiddenSize, vocabSize, temperature?, chunkSize?,
//                    withEntropy?, eager?, gradLogprobs?, gradEntropy?})
Napi::Value tokenLogprobsOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "tokenLogprobs arguments");
    const int64_t N = getInt(o, "tokens", "args"), C = getInt(o, "hiddenSize", "args"), V = getInt(o, "vocabSize", "args");
    at::Tensor hidden = float32ArrayToTensor(o.Get("hidden"), "hidden", {N, C});
    at::Tensor weight = float32ArrayToTensor(o.Get("weight"), "weight", {V, C});
    at::Tensor targets = int32ArrayToTensor(o.Get("targets"), "targets", {N}).to(at::kLong);
    TokenLogprobsOptions options;
    options.temperature = getOptionalNumber(o, "temperature", 1.0);
    options.chunkSize = static_cast<int64_t>(getOptionalNumber(o, "chunkSize", 1024));
    options.withEntropy = getOptionalBool(o, "withEntropy", false);
    const bool eager = getOptionalBool(o, "eager", false);
    at::Tensor gradLogprobs, gradEntropy;
    if (!o.Get("gradLogprobs").IsUndefined()) gradLogprobs = float32ArrayToTensor(o.Get("gradLogprobs"), "gradLogprobs", {N});
    if (!o.Get("gradEntropy").IsUndefined()) gradEntropy = float32ArrayToTensor(o.Get("gradEntropy"), "gradEntropy", {N});
    using Result = std::shared_ptr<LogprobsOpResult>;
    return PromiseWorker<Result>::start(
        env,
        [=]() mutable {
          const bool backward = gradLogprobs.defined() || gradEntropy.defined();
          hidden.requires_grad_(backward);
          weight.requires_grad_(backward);
          TokenLogprobs lp = eager ? tokenLogprobsEager(hidden, weight, targets, options) : tokenLogprobs(hidden, weight, targets, options);
          auto r = std::make_shared<LogprobsOpResult>();
          r->logprobs = lp.logprobs.detach();
          if (lp.entropy.defined()) r->entropy = lp.entropy.detach();
          if (backward) {
            at::Tensor total = gradLogprobs.defined() ? (lp.logprobs * gradLogprobs).sum() : at::zeros({}, hidden.options());
            if (gradEntropy.defined() && lp.entropy.defined()) total = total + (lp.entropy * gradEntropy).sum();
            total.backward();
            r->gradHidden = hidden.grad();
            r->gradWeight = weight.grad();
          }
          return r;
        },
        [](Napi::Env env, Result& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("logprobs", tensorToFloat32Array(env, r->logprobs));
          if (r->entropy.defined()) out.Set("entropy", tensorToFloat32Array(env, r->entropy));
          if (r->gradHidden.defined()) out.Set("gradHidden", tensorToFloat32Array(env, r->gradHidden));
          if (r->gradWeight.defined()) out.Set("gradWeight", tensorToFloat32Array(env, r->gradWeight));
          return out;
        });
  });
}

struct PolicyLossOpResult {
  double loss = 0;
  PolicyLossStats stats;
  bool hasStats = false;
  at::Tensor gradLogprobs, gradEntropy;
};

// ops.policyLoss({logprobs, oldLogprobs, refLogprobs?, advantages, lossMask, klMask, sequenceIds,
//                 numSequences, entropy?, options, normalizers, eager?})
Napi::Value policyLossOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "policyLoss arguments");
    Napi::Value logprobsValue = o.Get("logprobs");
    if (!logprobsValue.IsTypedArray()) throw Napi::TypeError::New(env, "logprobs must be a Float32Array");
    const int64_t N = static_cast<int64_t>(logprobsValue.As<Napi::TypedArray>().ElementLength());
    PolicyLossInputs in;
    in.logprobs = float32ArrayToTensor(logprobsValue, "logprobs", {N}).requires_grad_(true);
    in.oldLogprobs = float32ArrayToTensor(o.Get("oldLogprobs"), "oldLogprobs", {N});
    if (!o.Get("refLogprobs").IsUndefined()) in.refLogprobs = float32ArrayToTensor(o.Get("refLogprobs"), "refLogprobs", {N});
    in.advantages = float32ArrayToTensor(o.Get("advantages"), "advantages", {N});
    in.lossMask = float32ArrayToTensor(o.Get("lossMask"), "lossMask", {N});
    in.klMask = float32ArrayToTensor(o.Get("klMask"), "klMask", {N});
    in.sequenceIds = int32ArrayToTensor(o.Get("sequenceIds"), "sequenceIds", {N}).to(at::kLong);
    in.numSequences = getInt(o, "numSequences", "args");
    if (!o.Get("entropy").IsUndefined()) in.entropy = float32ArrayToTensor(o.Get("entropy"), "entropy", {N}).requires_grad_(true);
    PolicyLossOptions options = toPolicyLossOptions(o.Get("options"));
    LossNormalizers normalizers = toNormalizers(o.Get("normalizers"));
    const bool eager = getOptionalBool(o, "eager", false);
    using Result = std::shared_ptr<PolicyLossOpResult>;
    return PromiseWorker<Result>::start(
        env,
        [=]() {
          auto r = std::make_shared<PolicyLossOpResult>();
          at::Tensor loss;
          if (eager) {
            loss = policyLossEager(in, options, normalizers);
          } else {
            PolicyLossResult fused = policyLoss(in, options, normalizers);
            loss = fused.loss;
            r->stats = fused.stats;
            r->hasStats = true;
          }
          r->loss = loss.item<double>();
          if (loss.requires_grad()) loss.backward();
          r->gradLogprobs = in.logprobs.grad().defined() ? in.logprobs.grad() : at::zeros_like(in.logprobs);
          if (in.entropy.defined()) r->gradEntropy = in.entropy.grad().defined() ? in.entropy.grad() : at::zeros_like(in.entropy);
          return r;
        },
        [](Napi::Env env, Result& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", r->loss);
          if (r->hasStats) out.Set("stats", statsToJs(env, r->stats));
          out.Set("gradLogprobs", tensorToFloat32Array(env, r->gradLogprobs));
          if (r->gradEntropy.defined()) out.Set("gradEntropy", tensorToFloat32Array(env, r->gradEntropy));
          return out;
        });
  });
}

// ops.adamw({params: Float32Array[], shapes: number[][], grads: Float32Array[][], lrs: number[],
//            beta1?, beta2?, eps?, weightDecay?, reference?: boolean}) -> Promise<Float32Array[]>
Napi::Value adamwOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "adamw arguments");
    Napi::Array params = o.Get("params").As<Napi::Array>(), shapes = o.Get("shapes").As<Napi::Array>();
    Napi::Array gradSteps = o.Get("grads").As<Napi::Array>();
    std::vector<std::vector<int64_t>> shapeList;
    std::vector<at::Tensor> initial;
    for (uint32_t i = 0; i < params.Length(); ++i) {
      shapeList.push_back(getIntVector(shapes.Get(i), "shapes[i]"));
      initial.push_back(float32ArrayToTensor(params.Get(i), "params[i]", shapeList.back()));
    }
    std::vector<std::vector<at::Tensor>> grads;
    for (uint32_t s = 0; s < gradSteps.Length(); ++s) {
      Napi::Array step = gradSteps.Get(s).As<Napi::Array>();
      grads.emplace_back();
      for (uint32_t i = 0; i < params.Length(); ++i) grads.back().push_back(float32ArrayToTensor(step.Get(i), "grads[s][i]", shapeList[i]));
    }
    std::vector<double> lrs;
    Napi::Array lrArray = o.Get("lrs").As<Napi::Array>();
    for (uint32_t s = 0; s < lrArray.Length(); ++s) lrs.push_back(lrArray.Get(s).As<Napi::Number>().DoubleValue());
    AdamWOptions options;
    options.beta1 = getOptionalNumber(o, "beta1", options.beta1);
    options.beta2 = getOptionalNumber(o, "beta2", options.beta2);
    options.eps = getOptionalNumber(o, "eps", options.eps);
    options.weightDecay = getOptionalNumber(o, "weightDecay", options.weightDecay);
    const bool reference = getOptionalBool(o, "reference", false);
    using Result = std::vector<at::Tensor>;
    return PromiseWorker<Result>::start(
        env, [=]() { return runAdamW(initial, grads, lrs, options, reference); },
        [](Napi::Env env, Result& out) -> Napi::Value {
          Napi::Array array = Napi::Array::New(env, out.size());
          for (size_t i = 0; i < out.size(); ++i) array.Set(static_cast<uint32_t>(i), tensorToFloat32Array(env, out[i]));
          return array;
        });
  });
}

// ops.benchPolicyLoss({tokens, hiddenSize, vocabSize, chunkSize, eager, lmHeadGrad, iterations, device})
Napi::Value benchPolicyLossOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "benchPolicyLoss arguments");
    const int64_t tokens = getInt(o, "tokens", "args"), hidden = getInt(o, "hiddenSize", "args");
    const int64_t vocab = getInt(o, "vocabSize", "args"), chunk = getInt(o, "chunkSize", "args");
    const int64_t iterations = getInt(o, "iterations", "args");
    const bool eager = getBool(o, "eager", "args"), lmHeadGrad = getBool(o, "lmHeadGrad", "args");
    const at::Device device = parseDevice(getOptionalString(o, "device", "auto"));
    return PromiseWorker<LossBenchResult>::start(
        env, [=]() { return benchPolicyLoss(tokens, hidden, vocab, chunk, eager, lmHeadGrad, iterations, device); },
        [](Napi::Env env, LossBenchResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", r.seconds);
          out.Set("peakBytes", static_cast<double>(r.peakBytes));
          out.Set("loss", r.loss);
          return out;
        });
  });
}

// ops.cpuMemory({resetPeak?}) -> {currentBytes, peakBytes}: libtorch's CPU allocations, counted
// from the first call on (the counting allocator is installed then).
Napi::Value cpuMemoryOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  installCpuMemoryTracker();
  if (info.Length() > 0 && info[0].IsObject() && getOptionalBool(info[0].As<Napi::Object>(), "resetPeak", false)) resetCpuPeakBytes();
  Napi::Object out = Napi::Object::New(env);
  out.Set("currentBytes", static_cast<double>(cpuCurrentBytes()));
  out.Set("peakBytes", static_cast<double>(cpuPeakBytes()));
  return out;
}

}  // namespace

void defineOps(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("tokenLogprobs", Napi::Function::New<tokenLogprobsOp>(env, "tokenLogprobs"));
  ops.Set("policyLoss", Napi::Function::New<policyLossOp>(env, "policyLoss"));
  ops.Set("adamw", Napi::Function::New<adamwOp>(env, "adamw"));
  ops.Set("cpuMemory", Napi::Function::New<cpuMemoryOp>(env, "cpuMemory"));
  ops.Set("benchPolicyLoss", Napi::Function::New<benchPolicyLossOp>(env, "benchPolicyLoss"));
  exports.Set("ops", ops);
}

}  // namespace octo::binding
