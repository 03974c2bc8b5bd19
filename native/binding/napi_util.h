// Helpers of the N-API glue: JS values <-> core structs, and promises for heavy calls.
//
// Every heavy call runs on libuv's thread pool through PromiseWorker and never blocks the
// JS thread. C++ exceptions become JS Errors carrying the short message only (no backtrace).
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

// Intra-op threads for engine work (0 = leave libtorch's default). OpenMP keeps its thread
// count per calling thread, so each pool thread applies it before it computes.
void setEngineThreads(int threads);
void applyEngineThreads();

// Work on the thread pool, then `convert` its result to JS on the main thread.
template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise start(Napi::Env env, Work work, Convert convert) {
    auto* worker = new PromiseWorker(env, std::move(work), std::move(convert));
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();  // the worker deletes itself after OnOK/OnError
    return promise;
  }

 protected:
  void Execute() override {
    try {
      applyEngineThreads();
      result_ = work_();
    } catch (const std::exception& e) {
      SetError(shortMessage(e));
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, shortMessage(e)).Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  PromiseWorker(Napi::Env env, Work work, Convert convert)
      : Napi::AsyncWorker(env, "octo-native"), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), convert_(std::move(convert)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  Result result_{};
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

// Typed arrays <-> CPU tensors (copied: the JS buffer may be collected while a worker runs).
at::Tensor float32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
at::Tensor int32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
at::Tensor uint8ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape);
Napi::Float32Array tensorToFloat32Array(Napi::Env env, const at::Tensor& tensor);

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
