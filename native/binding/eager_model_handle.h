// JS handle of the eager PyTorch baseline (core/bench_kernels.h EagerModel; `ops.EagerModel` in
// lib/native.ts), timed by `octo-native bench vs-eager`. Not part of the product path.
#pragma once

#include <mutex>

#include "binding/napi_util.h"
#include "core/bench_kernels.h"

namespace octo::binding {

class EagerModelHandle : public Napi::ObjectWrap<EagerModelHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit EagerModelHandle(const Napi::CallbackInfo& info);  // new ops.EagerModel(model): copies its weights

 private:
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value trainStep(const Napi::CallbackInfo& info);
  Napi::Value generate(const Napi::CallbackInfo& info);
  Napi::Value parameterCount(const Napi::CallbackInfo& info);

  // Calls run one at a time (a train step updates the weights the others read).
  struct State {
    std::mutex mutex;
    std::unique_ptr<EagerModel> model;
  };
  std::shared_ptr<State> state_;
};

}  // namespace octo::binding
