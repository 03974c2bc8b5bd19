// Helpers of the N-API glue: JS values <-> core structs, and promises for heavy calls.
//
// Every heavy call runs on its device's engine thread through PromiseWorker (native/README.md,
// "Threads") and never blocks the JS thread. C++ exceptions become JS Errors carrying the short
// message only (no backtrace).
#pragma once

#include <napi.h>

#include <functional>

#include "core/model.h"
#include "core/policy_loss.h"
#include "core/sampler.h"
#include "core/safetensors.h"

namespace octo::binding {

// The message of a C++ exception as a JS user should see it.
inline std::string shortMessage(const std::exception& e) {
  if (auto* torchError = dynamic_cast<const c10::Error*>(&e)) return torchError->what_without_backtrace();
  return e.what();
}

// Runs `body` and turns any C++ exception into a thrown JS Error.
template <typename Body>
auto guarded(Napi::Env env, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, shortMessage(e));
  }
}

// A heavy call whose result settles a JS promise: run() on the engine thread of its device
// (core/device_thread.h), then settle() back on the JS thread that made the call.
class EngineCall {
 public:
  virtual ~EngineCall() = default;
  virtual void run() = 0;                    // engine thread; must not throw
  virtual void settle(Napi::Env env) = 0;    // JS thread; must not throw
};

// Queues `call` on `device`'s engine thread; the JS thread of `env` settles and deletes it.
void postEngineCall(Napi::Env env, const at::Device& device, EngineCall* call);

// Queues `job` on `device`'s engine thread with no promise (releasing engine memory, and the
// like); it runs after every call queued before it.
void postEngineJob(const at::Device& device, std::function<void()> job);

// The engine's half of a call and its JS half: `work` runs on the device's engine thread, then
// `convert` turns its result into JS on the JS thread. C++ exceptions of either reject the
// promise with the short message. Calls for one device run one at a time in the order made.
template <typename Result>
class PromiseWorker final : public EngineCall {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise start(Napi::Env env, const at::Device& device, Work work, Convert convert) {
    auto* call = new PromiseWorker(env, std::move(work), std::move(convert));
    Napi::Promise promise = call->deferred_.Promise();
    postEngineCall(env, device, call);
    return promise;
  }
  // Work that is not tied to a device's tensors (CPU ops, file reads) runs on the CPU thread.
  static Napi::Promise start(Napi::Env env, Work work, Convert convert) {
    return start(env, at::Device(at::kCPU), std::move(work), std::move(convert));
  }

  void run() override {
    try {
      result_ = work_();
    } catch (const std::exception& e) {
      error_ = shortMessage(e);
      failed_ = true;
    } catch (...) {
      error_ = "the engine failed with an unknown error";
      failed_ = true;
    }
  }

  void settle(Napi::Env env) override {
    try {
      if (failed_) {
        deferred_.Reject(Napi::Error::New(env, error_).Value());
        return;
      }
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, shortMessage(e)).Value());
    }
  }

 private:
  PromiseWorker(Napi::Env env, Work work, Convert convert)
      : deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), convert_(std::move(convert)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  Result result_{};
  bool failed_ = false;
  std::string error_;
};

// --- reading JS values (the TS layer validated them; these checks catch programming errors) ---

// Options objects: a call with several scalars takes them as one object of named options, read
// with these getters, whose errors name the key: requireNumber(options, "temperature") throws
// TypeError("options.temperature must be a number"). A key is absent when undefined or null;
// optional* then return `fallback`, and throw like require* on a present value of another type.
double requireNumber(const Napi::Object& options, const char* key);
int64_t requireInt(const Napi::Object& options, const char* key);
bool requireBool(const Napi::Object& options, const char* key);
std::string requireString(const Napi::Object& options, const char* key);
double optionalNumber(const Napi::Object& options, const char* key, double fallback);
int64_t optionalInt(const Napi::Object& options, const char* key, int64_t fallback);
bool optionalBool(const Napi::Object& options, const char* key, bool fallback);
std::string optionalString(const Napi::Object& options, const char* key, const std::string& fallback);

// The same for an object that is not a call's options: `owner` names it in errors ("spec.vocabSize ...").
Napi::Object requireObject(const Napi::Value& value, const char* what);
Napi::Value requireKey(const Napi::Object& object, const char* key, const char* owner);
int64_t getInt(const Napi::Object& object, const char* key, const char* owner);
double getNumber(const Napi::Object& object, const char* key, const char* owner);
bool getBool(const Napi::Object& object, const char* key, const char* owner);
std::string getString(const Napi::Object& object, const char* key, const char* owner);
std::vector<int64_t> getIntVector(const Napi::Value& value, const char* what);
std::vector<int64_t> int32ArrayToVector(const Napi::Value& value, const char* what);

// Typed arrays -> CPU tensors, copied with a plain memcpy (the JS buffer may be collected while
// the engine works; no ATen kernel runs on the JS thread). Convert dtypes in the engine's work.
at::Tensor float32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
at::Tensor int32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
at::Tensor uint8ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
// CPU tensors -> Float32Array: a copy, for small results.
Napi::Float32Array tensorToFloat32Array(Napi::Env env, const at::Tensor& tensor);
// A contiguous CPU fp32 tensor as a Float32Array over its own memory (no copy); the tensor lives
// until JS collects the array.
Napi::Float32Array tensorAsFloat32Array(Napi::Env env, at::Tensor tensor);

ModelSpec toModelSpec(const Napi::Value& value);
PolicyLossOptions toPolicyLossOptions(const Napi::Value& value);
LossNormalizers toNormalizers(const Napi::Value& value);
Napi::Object lossStatsToJs(Napi::Env env, const PolicyLossStats& stats);  // the fields of OCTO_LOSS_STATS
std::vector<TensorRecord> toTensorRecords(const Napi::Value& value);
SamplingParams toSamplingParams(const Napi::Value& value);

Napi::Array shapeToJs(Napi::Env env, at::IntArrayRef shape);
// [{name, shape}] — how parameter and state tables cross to JS.
using NamedShape = std::pair<std::string, std::vector<int64_t>>;
Napi::Array namedShapesToJs(Napi::Env env, const std::vector<NamedShape>& items);
template <typename Tensors>  // a range of (name, tensor) pairs
std::vector<NamedShape> tensorShapes(const Tensors& tensors) {
  std::vector<NamedShape> out;
  for (const auto& [name, tensor] : tensors) out.emplace_back(name, tensor.sizes().vec());
  return out;
}

}  // namespace octo::binding
