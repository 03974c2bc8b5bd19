#include "binding/process_group_handle.h"

#include <cstring>

#include "binding/addon_data.h"
#include "core/engine_info.h"

namespace octo::binding {

Napi::Function ProcessGroupHandle::define(Napi::Env env) {
  return DefineClass(env, "ProcessGroup",
                     {
                         InstanceMethod<&ProcessGroupHandle::allReduce>("allReduce"),
                         InstanceMethod<&ProcessGroupHandle::barrier>("barrier"),
                         InstanceMethod<&ProcessGroupHandle::shutdown>("shutdown"),
                         InstanceAccessor<&ProcessGroupHandle::rank>("rank"),
                         InstanceAccessor<&ProcessGroupHandle::worldSize>("worldSize"),
                         InstanceAccessor<&ProcessGroupHandle::backend>("backend"),
                     });
}

Napi::Object ProcessGroupHandle::wrap(Napi::Env env, std::shared_ptr<DistributedGroup> group) {
  auto* holder = new std::shared_ptr<DistributedGroup>(std::move(group));
  auto external = Napi::External<std::shared_ptr<DistributedGroup>>::New(
      env, holder, [](Napi::Env, std::shared_ptr<DistributedGroup>* p) { delete p; });
  return env.GetInstanceData<AddonData>()->processGroupConstructor.New({external});
}

std::shared_ptr<DistributedGroup> ProcessGroupHandle::unwrap(const Napi::Value& value) {
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(env.GetInstanceData<AddonData>()->processGroupConstructor.Value()))
    throw Napi::TypeError::New(env, "expected a native ProcessGroup handle (from createProcessGroup)");
  return Unwrap(value.As<Napi::Object>())->group_;
}

ProcessGroupHandle::ProcessGroupHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "ProcessGroup handles come from createProcessGroup, not from `new`");
  group_ = *info[0].As<Napi::External<std::shared_ptr<DistributedGroup>>>().Data();
}

// allReduce(values: Float64Array, op: "sum" | "max" | "min", what: string) -> Promise<Float64Array>
Napi::Value ProcessGroupHandle::allReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      throw Napi::TypeError::New(env, "allReduce needs a Float64Array");
    Napi::Float64Array input = info[0].As<Napi::Float64Array>();
    const std::string opName = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    ReduceOp op;
    if (opName == "sum") op = ReduceOp::Sum;
    else if (opName == "max") op = ReduceOp::Max;
    else if (opName == "min") op = ReduceOp::Min;
    else throw Napi::TypeError::New(env, "allReduce op must be 'sum', 'max' or 'min'");
    const std::string what = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "an all-reduce";
    // Copied: the JS buffer may move while the worker runs.
    at::Tensor values = at::empty({static_cast<int64_t>(input.ElementLength())}, at::kDouble);
    std::memcpy(values.data_ptr<double>(), input.Data(), input.ElementLength() * sizeof(double));
    auto group = group_;
    return PromiseWorker<at::Tensor>::start(
        env, group->device(),
        [group, values, op, what]() mutable {
          at::Tensor onDevice = values.to(group->device());
          std::vector<at::Tensor> tensors{onDevice};
          group->allReduce(tensors, op, what);
          return onDevice.cpu();
        },
        [](Napi::Env env, at::Tensor& reduced) -> Napi::Value {
          Napi::Float64Array out = Napi::Float64Array::New(env, reduced.numel());
          std::memcpy(out.Data(), reduced.data_ptr<double>(), reduced.numel() * sizeof(double));
          return out;
        });
  });
}

// barrier(what: string) -> Promise<void>
Napi::Value ProcessGroupHandle::barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string what = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "a barrier";
    auto group = group_;
    return PromiseWorker<bool>::start(
        env, group->device(), [group, what]() { group->barrier(what); return true; },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// shutdown(): leaves the group (NCCL communicators freed); later collectives reject.
Napi::Value ProcessGroupHandle::shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    group_->shutdown();
    return env.Undefined();
  });
}

Napi::Value ProcessGroupHandle::rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(group_->rank())); }
Napi::Value ProcessGroupHandle::worldSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(group_->worldSize())); }
Napi::Value ProcessGroupHandle::backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), group_->backend()); }

namespace {

// createProcessGroup({rank, worldSize, masterAddr, masterPort, timeoutSeconds, backend, device})
//   -> Promise<ProcessGroup>, resolved once every rank has joined
Napi::Value createProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = requireObject(info[0], "process group options");
    ProcessGroupOptions options;
    options.rank = getInt(o, "rank", "options");
    options.worldSize = getInt(o, "worldSize", "options");
    options.masterAddr = getString(o, "masterAddr", "options");
    options.masterPort = getInt(o, "masterPort", "options");
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(getNumber(o, "timeoutSeconds", "options") * 1000));
    options.backend = optionalString(o, "backend", "auto");
    options.device = parseDevice(optionalString(o, "device", "cpu"));
    using Result = std::shared_ptr<DistributedGroup>;
    return PromiseWorker<Result>::start(
        env, options.device, [options]() { return std::make_shared<DistributedGroup>(options); },
        [](Napi::Env env, Result& group) -> Napi::Value { return ProcessGroupHandle::wrap(env, group); });
  });
}

Napi::Value distributedBackends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<std::string> names = availableBackends();
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) out.Set(static_cast<uint32_t>(i), names[i]);
  return out;
}

}  // namespace

void defineDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("createProcessGroup", Napi::Function::New<createProcessGroup>(env, "createProcessGroup"));
  exports.Set("distributedBackends", Napi::Function::New<distributedBackends>(env, "distributedBackends"));
}

}  // namespace octo::binding
