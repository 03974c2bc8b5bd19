#include "binding/ops.h"

#include "binding/eager_model_handle.h"
#include "core/bench_kernels.h"
#include "core/engine_info.h"
#include "core/logprobs.h"
#include "core/memory_tracker.h"
#include "core/reference_optimizer.h"

namespace octo::binding {

namespace {

Napi::Object memoryUseToJs(Napi::Env env, const MemoryUse& use) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("currentBytes", static_cast<double>(use.currentBytes));
  out.Set("peakBytes", static_cast<double>(use.peakBytes));
  out.Set("cachedBytes", static_cast<double>(use.cachedBytes));
  return out;
}

struct LogprobsOpResult {
  at::Tensor logprobs, entropy, gradHidden, gradWeight;
};

// ops.tokenLogprobs({hidden, weight, targets, tokens, hiddenSize, vocabSize, chunkSize, temperature?,
//                    withEntropy?, eager?, gradLogprobs?, gradEntropy?})
Napi::Value tokenLogprobsOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "tokenLogprobs arguments");
    const int64_t N = requireInt(o, "tokens"), C = requireInt(o, "hiddenSize"), V = requireInt(o, "vocabSize");
    at::Tensor hidden = float32ArrayToTensor(o.Get("hidden"), "hidden", {N, C});
    at::Tensor weight = float32ArrayToTensor(o.Get("weight"), "weight", {V, C});
    at::Tensor targets = int32ArrayToTensor(o.Get("targets"), "targets", {N}).to(at::kLong);
    TokenLogprobsOptions options;
    options.temperature = optionalNumber(o, "temperature", 1.0);
    options.chunkSize = requireInt(o, "chunkSize");  // lib/engine/ops.ts passes LOGPROB_CHUNK_SIZE by default
    options.withEntropy = optionalBool(o, "withEntropy", false);
    const bool eager = optionalBool(o, "eager", false);
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
    in.numSequences = requireInt(o, "numSequences");
    if (!o.Get("entropy").IsUndefined()) in.entropy = float32ArrayToTensor(o.Get("entropy"), "entropy", {N}).requires_grad_(true);
    PolicyLossOptions options = toPolicyLossOptions(o.Get("options"));
    LossNormalizers normalizers = toNormalizers(o.Get("normalizers"));
    const bool eager = optionalBool(o, "eager", false);
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
          if (r->hasStats) out.Set("stats", lossStatsToJs(env, r->stats));
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
    options.beta1 = optionalNumber(o, "beta1", options.beta1);
    options.beta2 = optionalNumber(o, "beta2", options.beta2);
    options.eps = optionalNumber(o, "eps", options.eps);
    options.weightDecay = optionalNumber(o, "weightDecay", options.weightDecay);
    const bool reference = optionalBool(o, "reference", false);
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
    const int64_t tokens = requireInt(o, "tokens"), hidden = requireInt(o, "hiddenSize");
    const int64_t vocab = requireInt(o, "vocabSize"), chunk = requireInt(o, "chunkSize");
    const int64_t iterations = requireInt(o, "iterations");
    const bool eager = requireBool(o, "eager"), lmHeadGrad = requireBool(o, "lmHeadGrad");
    const at::Device device = parseDevice(optionalString(o, "device", "auto"));
    return PromiseWorker<LossBenchResult>::start(
        env, device, [=]() { return benchPolicyLoss(tokens, hidden, vocab, chunk, eager, lmHeadGrad, iterations, device); },
        [](Napi::Env env, LossBenchResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", r.seconds);
          out.Set("peakBytes", static_cast<double>(r.peakBytes));
          out.Set("loss", r.loss);
          return out;
        });
  });
}

// ops.deviceMemory(device, {resetPeak?}) -> {currentBytes, peakBytes}: "cpu" from a counting allocator
// around libtorch's (counted from the first call on); "cuda:N" from libtorch's caching allocator
// (tensors' bytes, not the allocator's reserved cache).
Napi::Value deviceMemoryOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "deviceMemory needs a device name such as 'cuda:0'");
    const bool reset = info.Length() > 1 && info[1].IsObject() && optionalBool(info[1].As<Napi::Object>(), "resetPeak", false);
    return memoryUseToJs(env, deviceMemory(parseDevice(info[0].As<Napi::String>().Utf8Value()), reset));
  });
}

}  // namespace

void defineOps(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("tokenLogprobs", Napi::Function::New<tokenLogprobsOp>(env, "tokenLogprobs"));
  ops.Set("policyLoss", Napi::Function::New<policyLossOp>(env, "policyLoss"));
  ops.Set("adamw", Napi::Function::New<adamwOp>(env, "adamw"));
  ops.Set("deviceMemory", Napi::Function::New<deviceMemoryOp>(env, "deviceMemory"));
  ops.Set("benchPolicyLoss", Napi::Function::New<benchPolicyLossOp>(env, "benchPolicyLoss"));
  ops.Set("EagerModel", EagerModelHandle::define(env));  // the eager baseline of bench vs-eager
  exports.Set("ops", ops);
}

}  // namespace octo::binding
