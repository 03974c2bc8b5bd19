#include "binding/ops.h"

#include "binding/eager_model_handle.h"
#include "binding/model_handle.h"

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

Napi::Object logprobsPlanToJs(Napi::Env env, const LogprobsPlan& plan) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("chunkTokens", static_cast<double>(plan.chunkTokens));
  out.Set("backward", logprobsBackwardName(plan.backward));
  out.Set("budgetBytes", static_cast<double>(plan.budgetBytes));
  out.Set("workingBytes", static_cast<double>(plan.workingBytes));
  return out;
}

// A Float32Array as a CPU tensor over its own memory (no copy). The caller keeps the array
// referenced (JsArrays) until the call completes, and it must not be detached or written meanwhile.
at::Tensor float32ArrayView(const Napi::Value& value, const char* what, at::IntArrayRef shape) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(value.Env(), std::string(what) + " must be a Float32Array");
  Napi::Float32Array array = value.As<Napi::Float32Array>();
  const int64_t expected = c10::multiply_integers(shape);
  if (static_cast<int64_t>(array.ElementLength()) != expected)
    throw Napi::RangeError::New(value.Env(), std::string(what) + " has " + std::to_string(array.ElementLength()) +
                                                 " elements; expected " + std::to_string(expected));
  return at::from_blob(array.Data(), shape, at::TensorOptions().dtype(at::kFloat));
}

// Whether two tensors' bytes overlap (any device: a CUDA weight never overlaps a JS array).
bool sharesMemory(const at::Tensor& a, const at::Tensor& b) {
  if (a.device() != b.device() || a.numel() == 0 || b.numel() == 0) return false;
  const auto* aStart = static_cast<const char*>(a.data_ptr());
  const auto* bStart = static_cast<const char*>(b.data_ptr());
  return aStart < bStart + b.nbytes() && bStart < aStart + a.nbytes();
}

// JS arrays whose memory a worker reads or writes: referenced from the call until its result is
// converted (on the JS thread, which releases them), so the GC cannot collect them meanwhile.
class JsArrays {
 public:
  // Holds `value` and returns its index for value().
  size_t hold(const Napi::Value& value) {
    held_.push_back(Napi::Persistent(value));
    return held_.size() - 1;
  }
  Napi::Value value(size_t index) const { return held_[index].Value(); }
  void release() { held_.clear(); }

 private:
  std::vector<Napi::Reference<Napi::Value>> held_;
};

struct LogprobsOpResult {
  at::Tensor logprobs, entropy, gradHidden, gradWeight;
  bool gradHiddenInPlace = false, gradWeightInPlace = false;  // written into gradHiddenOut / gradWeightOut
  LogprobsPlan plan;
  bool fused = false;
};

// Writes `grad` into the caller's buffer `out` (a view of its memory) unless it is that buffer already.
bool deliverInto(const at::Tensor& out, const at::Tensor& grad) {
  if (!out.defined() || !grad.defined()) return false;
  if (grad.data_ptr() != out.data_ptr()) out.copy_(grad);
  return true;
}

// ops.tokenLogprobs({hidden, weight, targets, tokens, hiddenSize, vocabSize, chunkSize, memoryBudgetBytes?,
//                    temperature?, withEntropy?, eager?, gradLogprobs?, gradEntropy?, lmHeadGrad?,
//                    gradHiddenOut?, gradWeightOut?})
// No copies of the inputs: hidden, gradLogprobs, gradEntropy and a Float32Array weight are read in
// place; a Model handle as `weight` lends its LM head (hidden then moves to the model's device and
// dtype). With gradHiddenOut / gradWeightOut the fused op writes its gradients into them directly
// (copied there when the weight lives on another device or in another dtype, and on the eager path).
Napi::Value tokenLogprobsOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "tokenLogprobs arguments");
    const int64_t N = requireInt(o, "tokens"), C = requireInt(o, "hiddenSize"), V = requireInt(o, "vocabSize");
    auto arrays = std::make_shared<JsArrays>();
    auto view = [&](const char* key, at::IntArrayRef shape, size_t* index = nullptr) {
      Napi::Value value = o.Get(key);
      at::Tensor tensor = float32ArrayView(value, key, shape);
      const size_t held = arrays->hold(value);
      if (index) *index = held;
      return tensor;
    };
    at::Tensor hidden = view("hidden", {N, C});
    at::Tensor weight;
    if (o.Get("weight").IsTypedArray()) {
      weight = view("weight", {V, C});
    } else if (!o.Get("weight").IsObject()) {
      throw Napi::TypeError::New(env, "weight must be a Float32Array [vocabSize, hiddenSize] or a Model (its LM head)");
    } else {
      // A model's LM head, through an alias: the model's own tensor keeps its autograd flags, and
      // the alias keeps the storage alive should the model be disposed during the call.
      weight = ModelHandle::unwrap(o.Get("weight"))->lmHead().detach();
      if (weight.size(0) != V || weight.size(1) != C)
        throw Napi::RangeError::New(env, "weight: the model's LM head is [" + std::to_string(weight.size(0)) + ", " +
                                             std::to_string(weight.size(1)) + "], not [vocabSize, hiddenSize] = [" +
                                             std::to_string(V) + ", " + std::to_string(C) + "]");
    }
    at::Tensor targets = int32ArrayToTensor(o.Get("targets"), "targets", {N}).to(at::kLong);
    TokenLogprobsOptions options;
    options.temperature = optionalNumber(o, "temperature", 1.0);
    options.chunkSize = requireInt(o, "chunkSize");  // lib/engine/ops.ts passes LOGPROB_CHUNK_SIZE by default
    options.memoryBudgetBytes = optionalInt(o, "memoryBudgetBytes", 0);
    options.withEntropy = optionalBool(o, "withEntropy", false);
    const bool eager = optionalBool(o, "eager", false);
    const bool lmHeadGrad = optionalBool(o, "lmHeadGrad", true);
    auto present = [&](const char* key) { return !o.Get(key).IsUndefined() && !o.Get(key).IsNull(); };
    at::Tensor gradLogprobs, gradEntropy, gradHiddenOut, gradWeightOut;
    if (present("gradLogprobs")) gradLogprobs = view("gradLogprobs", {N});
    if (present("gradEntropy")) gradEntropy = view("gradEntropy", {N});
    const bool backward = gradLogprobs.defined() || gradEntropy.defined();
    constexpr size_t kNotGiven = static_cast<size_t>(-1);
    size_t gradHiddenOutIndex = kNotGiven, gradWeightOutIndex = kNotGiven;
    if (backward && present("gradHiddenOut")) gradHiddenOut = view("gradHiddenOut", {N, C}, &gradHiddenOutIndex);
    if (backward && lmHeadGrad && present("gradWeightOut")) gradWeightOut = view("gradWeightOut", {V, C}, &gradWeightOutIndex);
    // The backward reads hidden and the weight while it writes the gradients.
    for (const at::Tensor& out : {gradHiddenOut, gradWeightOut})
      for (const at::Tensor& in : {hidden, weight, gradLogprobs, gradEntropy})
        if (out.defined() && in.defined() && sharesMemory(out, in))
          throw Napi::RangeError::New(env, "gradHiddenOut and gradWeightOut must not share memory with the inputs");
    if (gradHiddenOut.defined() && gradWeightOut.defined() && sharesMemory(gradHiddenOut, gradWeightOut))
      throw Napi::RangeError::New(env, "gradHiddenOut and gradWeightOut must be separate buffers");
    using Result = std::shared_ptr<LogprobsOpResult>;
    return PromiseWorker<Result>::start(
        env, weight.device(),  // a model's LM head: that model's engine thread
        [=]() mutable {
          auto r = std::make_shared<LogprobsOpResult>();
          const at::Tensor h = hidden.to(weight.device(), weight.scalar_type());  // the same tensor when they match
          const at::Tensor t = targets.to(weight.device());
          const at::Tensor upstreamLogprobs = gradLogprobs.defined() ? gradLogprobs.to(weight.device()) : at::Tensor();
          const at::Tensor upstreamEntropy = gradEntropy.defined() ? gradEntropy.to(weight.device()) : at::Tensor();
          if (!backward) {
            at::NoGradGuard noGrad;
            TokenLogprobs lp = eager ? tokenLogprobsEager(h, weight, t, options) : tokenLogprobs(h, weight, t, options);
            r->logprobs = lp.logprobs;
            r->entropy = lp.entropy;
            r->plan = lp.plan;
            r->fused = !eager;
            return r;
          }
          if (eager) {  // plain autograd on full logits: the reference, copied into the out buffers
            at::Tensor hLeaf = h.detach().requires_grad_(true), wLeaf = weight.detach().requires_grad_(lmHeadGrad);
            TokenLogprobs lp = tokenLogprobsEager(hLeaf, wLeaf, t, options);
            at::Tensor total = upstreamLogprobs.defined() ? (lp.logprobs * upstreamLogprobs).sum() : at::zeros({}, lp.logprobs.options());
            if (upstreamEntropy.defined() && lp.entropy.defined()) total = total + (lp.entropy * upstreamEntropy).sum();
            total.backward();
            r->logprobs = lp.logprobs.detach();
            if (lp.entropy.defined()) r->entropy = lp.entropy.detach();
            r->gradHidden = hLeaf.grad();
            r->gradWeight = lmHeadGrad ? wLeaf.grad() : at::Tensor();
          } else {
            TokenLogprobsGradients gradients;
            gradients.wantLmHead = lmHeadGrad;
            // The caller's buffers take the gradients directly where dtype and device allow.
            if (gradHiddenOut.defined() && h.scalar_type() == at::kFloat && h.is_cpu()) gradients.hidden = gradHiddenOut;
            if (gradWeightOut.defined() && weight.is_cpu()) gradients.lmHead = gradWeightOut;
            TokenLogprobs lp = tokenLogprobsWithGradients(h, weight, t, options, upstreamLogprobs, upstreamEntropy, gradients);
            r->logprobs = lp.logprobs;
            r->entropy = lp.entropy;
            r->plan = lp.plan;
            r->fused = true;
            r->gradHidden = gradients.hidden;
            r->gradWeight = gradients.lmHead;
          }
          r->gradHiddenInPlace = deliverInto(gradHiddenOut, r->gradHidden);
          r->gradWeightInPlace = deliverInto(gradWeightOut, r->gradWeight);
          return r;
        },
        [arrays, gradHiddenOutIndex, gradWeightOutIndex](Napi::Env env, Result& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("logprobs", tensorToFloat32Array(env, r->logprobs));
          if (r->entropy.defined()) out.Set("entropy", tensorToFloat32Array(env, r->entropy));
          // The caller's own arrays when the gradients went there; new arrays (a copy) otherwise.
          if (r->gradHidden.defined())
            out.Set("gradHidden", r->gradHiddenInPlace ? arrays->value(gradHiddenOutIndex) : tensorToFloat32Array(env, r->gradHidden));
          if (r->gradWeight.defined())
            out.Set("gradWeight", r->gradWeightInPlace ? arrays->value(gradWeightOutIndex) : tensorToFloat32Array(env, r->gradWeight));
          if (r->fused) out.Set("plan", logprobsPlanToJs(env, r->plan));
          arrays->release();
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
        [eager](Napi::Env env, LossBenchResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("seconds", r.seconds);
          out.Set("peakBytes", static_cast<double>(r.peakBytes));
          out.Set("loss", r.loss);
          if (!eager) out.Set("plan", logprobsPlanToJs(env, r.plan));
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
