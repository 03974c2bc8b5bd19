// Module entry of the native addon: the functions lib/native.ts describes.
#include "binding/addon_data.h"
#include "binding/model_handle.h"
#include "binding/ops.h"
#include "binding/trainer_handle.h"
#include "binding/prefix_cache_handle.h"
#include "binding/process_group_handle.h"
#include "core/bench_kernels.h"
#include "core/device_thread.h"
#include "core/engine_info.h"
#include "core/memory_tracker.h"


namespace octo::binding {

namespace {

struct LoadOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
};

LoadOptions toLoadOptions(const Napi::Value& value) {
  LoadOptions options;
  Napi::Object o = value.IsObject() ? value.As<Napi::Object>() : Napi::Object::New(value.Env());
  options.device = parseDevice(optionalString(o, "device", "auto"));
  options.dtype = computeDtype(options.device, optionalString(o, "dtype", "auto"));
  return options;
}

using ModelResult = std::shared_ptr<DecoderModel>;

Napi::Value resolveModel(Napi::Env env, ModelResult& model) { return ModelHandle::wrap(env, model); }

// loadModel(spec, records, {device, dtype}) -> Promise<Model>
// `records` are the validated safetensors entries of every expected parameter.
Napi::Value loadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ModelSpec spec = toModelSpec(info[0]);
    std::vector<TensorRecord> records = toTensorRecords(info[1]);
    LoadOptions options = toLoadOptions(info[2]);
    return PromiseWorker<ModelResult>::start(
        env, options.device,
        [spec, records = std::move(records), options]() {
          SafetensorsReader reader;
          std::unordered_map<std::string, at::Tensor> weights;
          for (const auto& record : records) weights.emplace(record.name, reader.read(record));
          return std::make_shared<DecoderModel>(spec, std::move(weights), options.device, options.dtype);
        },
        resolveModel);
  });
}

// createModel(spec, seed, {device, dtype}) -> Promise<Model> with freshly initialised weights
Napi::Value createModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ModelSpec spec = toModelSpec(info[0]);
    const uint64_t seed = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    LoadOptions options = toLoadOptions(info[2]);
    return PromiseWorker<ModelResult>::start(
        env, options.device,
        [spec, seed, options]() {
          return std::make_shared<DecoderModel>(spec, initialParameters(spec, seed), options.device, options.dtype);
        },
        resolveModel);
  });
}

// expectedParameters(spec) -> [{name, shape}]
Napi::Value expectedParametersJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::vector<NamedShape> shapes;
    for (const auto& p : expectedParameters(toModelSpec(info[0]))) shapes.emplace_back(p.name, p.shape);
    return namedShapesToJs(env, shapes);
  });
}

Napi::Value infoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    EngineInfo e = engineInfo();
    Napi::Object out = Napi::Object::New(env);
    out.Set("torchVersion", e.torchVersion);
    out.Set("cudaAvailable", e.cudaAvailable);
    out.Set("cudaDeviceCount", static_cast<double>(e.cudaDeviceCount));
    out.Set("scaledDotProductAttention", e.scaledDotProductAttention);
    Napi::Array features = Napi::Array::New(env, e.features.size());
    for (size_t i = 0; i < e.features.size(); ++i) features.Set(static_cast<uint32_t>(i), e.features[i]);
    out.Set("features", features);
    out.Set("threads", static_cast<double>(e.threads));
    out.Set("parallelInfo", e.parallelInfo);
    out.Set("buildConfig", e.buildConfig);
    return out;
  });
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int threads = info[0].As<Napi::Number>().Int32Value();
    if (threads < 1) throw Napi::RangeError::New(env, "setNumThreads needs a thread count >= 1");
    DeviceThread::setIntraOpThreads(threads);
    return env.Undefined();
  });
}

// timeMatmul(m, k, n, iterations, {device, dtype}) -> Promise<seconds per matmul>
Napi::Value timeMatmulJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int64_t m = info[0].As<Napi::Number>().Int64Value(), k = info[1].As<Napi::Number>().Int64Value();
    const int64_t n = info[2].As<Napi::Number>().Int64Value(), iterations = info[3].As<Napi::Number>().Int64Value();
    LoadOptions options = toLoadOptions(info[4]);
    return PromiseWorker<double>::start(
        env, options.device, [=]() { return timeMatmul(m, k, n, iterations, options.device, options.dtype); },
        [](Napi::Env env, double& seconds) -> Napi::Value { return Napi::Number::New(env, seconds); });
  });
}

// timeFileRead(path) -> Promise<seconds to pread the whole file into fresh memory>
Napi::Value timeFileReadJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    return PromiseWorker<double>::start(
        env, [path]() { return timeFileRead(path); },
        [](Napi::Env env, double& seconds) -> Napi::Value { return Napi::Number::New(env, seconds); });
  });
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  installCpuMemoryTracker();  // before any tensor: every CPU block is counted and may be reused
  auto* data = new AddonData();
  data->modelConstructor = Napi::Persistent(ModelHandle::define(env));
  data->prefixCacheConstructor = Napi::Persistent(PrefixCacheHandle::define(env));
  data->processGroupConstructor = Napi::Persistent(ProcessGroupHandle::define(env));
  env.SetInstanceData(data);
  openEngineCompletions(env, data);
  exports.Set("Model", data->modelConstructor.Value());
  exports.Set("Trainer", TrainerHandle::define(env));
  defineOps(env, exports);
  defineDistributed(env, exports);
  exports.Set("loadModel", Napi::Function::New<loadModel>(env, "loadModel"));
  exports.Set("createModel", Napi::Function::New<createModel>(env, "createModel"));
  exports.Set("expectedParameters", Napi::Function::New<expectedParametersJs>(env, "expectedParameters"));
  exports.Set("info", Napi::Function::New<infoJs>(env, "info"));
  exports.Set("timeFileRead", Napi::Function::New<timeFileReadJs>(env, "timeFileRead"));
  exports.Set("timeMatmul", Napi::Function::New<timeMatmulJs>(env, "timeMatmul"));
  exports.Set("setNumThreads", Napi::Function::New<setNumThreads>(env, "setNumThreads"));
  return exports;
}

}  // namespace

}  // namespace octo::binding

static Napi::Object initOctoNative(Napi::Env env, Napi::Object exports) { return octo::binding::init(env, exports); }

NODE_API_MODULE(octo_native, initOctoNative)
