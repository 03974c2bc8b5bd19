#include "binding/eager_model_handle.h"

#include <cstring>

#include "binding/model_handle.h"

namespace octo::binding {

Napi::Function EagerModelHandle::define(Napi::Env env) {
  return DefineClass(env, "EagerModel",
                     {
                         InstanceMethod<&EagerModelHandle::forward>("forward"),
                         InstanceMethod<&EagerModelHandle::trainStep>("trainStep"),
                         InstanceMethod<&EagerModelHandle::generate>("generate"),
                         InstanceAccessor<&EagerModelHandle::parameterCount>("parameterCount"),
                     });
}

EagerModelHandle::EagerModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EagerModelHandle>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&]() {
    std::shared_ptr<DecoderModel> model = ModelHandle::unwrap(info[0]);
    state_ = std::make_shared<State>();
    state_->model = std::make_unique<EagerModel>(*model);
    return 0;
  });
}

Napi::Value EagerModelHandle::parameterCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(state_->model->parameterCount()));
}

// forward({inputIds: Int32Array, batch, length, returnLogits?}) -> Promise<Float32Array | undefined>
// logits [batch, length, vocab] when returnLogits (for the agreement check), else nothing
// crosses back: the logits stay a tensor, as they would in Python.
Napi::Value EagerModelHandle::forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "options");
    const int64_t B = requireInt(o, "batch"), T = requireInt(o, "length");
    at::Tensor ids = int32ArrayToTensor(o.Get("inputIds"), "options.inputIds", {B, T}).to(at::kLong);
    const bool returnLogits = optionalBool(o, "returnLogits", false);
    using Result = std::shared_ptr<at::Tensor>;
    return PromiseWorker<Result>::start(
        env, state_->model->device(),
        [state = state_, ids, returnLogits]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          at::Tensor logits = state->model->logits(ids);
          return std::make_shared<at::Tensor>(returnLogits ? logits.to(at::kCPU).contiguous() : at::Tensor());
        },
        [](Napi::Env env, Result& logits) -> Napi::Value {
          return logits->defined() ? Napi::Value(tensorToFloat32Array(env, *logits)) : env.Undefined();
        });
  });
}

// trainStep({inputIds, batch, length, attentionMask: Uint8Array, lossMask, advantages, oldLogprobs,
//            klMask?, refLogprobs?, loss: LossOptions, optimizer: {lr, beta1?, beta2?, eps?, weightDecay?,
//            maxGradNorm?}}) -> Promise<{loss, gradNorm}>
Napi::Value EagerModelHandle::trainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "options");
    const int64_t B = requireInt(o, "batch"), T = requireInt(o, "length");
    EagerTrainBatch batch;
    batch.inputIds = int32ArrayToTensor(o.Get("inputIds"), "options.inputIds", {B, T}).to(at::kLong);
    batch.attentionMask = uint8ArrayToTensor(o.Get("attentionMask"), "options.attentionMask", {B, T}).to(at::kLong);
    batch.lossMask = float32ArrayToTensor(o.Get("lossMask"), "options.lossMask", {B, T});
    batch.advantages = float32ArrayToTensor(o.Get("advantages"), "options.advantages", {B, T});
    batch.oldLogprobs = float32ArrayToTensor(o.Get("oldLogprobs"), "options.oldLogprobs", {B, T});
    if (!o.Get("klMask").IsUndefined()) batch.klMask = float32ArrayToTensor(o.Get("klMask"), "options.klMask", {B, T});
    if (!o.Get("refLogprobs").IsUndefined())
      batch.refLogprobs = float32ArrayToTensor(o.Get("refLogprobs"), "options.refLogprobs", {B, T});
    const PolicyLossOptions loss = toPolicyLossOptions(o.Get("loss"));
    Napi::Object opt = requireObject(o.Get("optimizer"), "options.optimizer");
    EagerOptimizerOptions optimizer;
    optimizer.lr = requireNumber(opt, "lr");
    optimizer.beta1 = optionalNumber(opt, "beta1", optimizer.beta1);
    optimizer.beta2 = optionalNumber(opt, "beta2", optimizer.beta2);
    optimizer.eps = optionalNumber(opt, "eps", optimizer.eps);
    optimizer.weightDecay = optionalNumber(opt, "weightDecay", optimizer.weightDecay);
    optimizer.maxGradNorm = optionalNumber(opt, "maxGradNorm", optimizer.maxGradNorm);
    return PromiseWorker<EagerStepResult>::start(
        env, state_->model->device(),
        [state = state_, batch, loss, optimizer]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          return state->model->trainStep(batch, loss, optimizer);
        },
        [](Napi::Env env, EagerStepResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", r.loss);
          out.Set("gradNorm", r.gradNorm);
          return out;
        });
  });
}

// generate({promptIds: Int32Array, batch, length, temperature, topP, maxNewTokens, seed})
//   -> Promise<Int32Array> new tokens [batch, maxNewTokens]
Napi::Value EagerModelHandle::generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "options");
    const int64_t B = requireInt(o, "batch"), P = requireInt(o, "length");
    at::Tensor prompts = int32ArrayToTensor(o.Get("promptIds"), "options.promptIds", {B, P}).to(at::kLong);
    EagerSampling sampling;
    sampling.temperature = requireNumber(o, "temperature");
    sampling.topP = requireNumber(o, "topP");
    sampling.maxNewTokens = requireInt(o, "maxNewTokens");
    sampling.seed = static_cast<uint64_t>(requireInt(o, "seed"));
    using Result = std::shared_ptr<at::Tensor>;
    return PromiseWorker<Result>::start(
        env, state_->model->device(),
        [state = state_, prompts, sampling]() {
          std::lock_guard<std::mutex> lock(state->mutex);
          return std::make_shared<at::Tensor>(state->model->generate(prompts, sampling).to(at::kCPU, at::kInt).contiguous());
        },
        [](Napi::Env env, Result& tokens) -> Napi::Value {
          Napi::Int32Array out = Napi::Int32Array::New(env, tokens->numel());
          std::memcpy(out.Data(), tokens->data_ptr<int32_t>(), tokens->numel() * sizeof(int32_t));
          return out;
        });
  });
}

}  // namespace octo::binding
