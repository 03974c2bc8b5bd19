// JS handle of a native Trainer (class `Trainer` in lib/native.ts); the low-level `ops` are in ops.h.
#pragma once

#include "binding/napi_util.h"
#include "core/trainer.h"

namespace octo::binding {

class TrainerHandle : public Napi::ObjectWrap<TrainerHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit TrainerHandle(const Napi::CallbackInfo& info);  // new Trainer(model, options)
  ~TrainerHandle() override;

 private:
  Napi::Value enableDataParallel(const Napi::CallbackInfo& info);
  Napi::Value accumulate(const Napi::CallbackInfo& info);
  Napi::Value reduceGradients(const Napi::CallbackInfo& info);
  Napi::Value accumulatePadding(const Napi::CallbackInfo& info);
  Napi::Value shardMemory(const Napi::CallbackInfo& info);
  Napi::Value step(const Napi::CallbackInfo& info);
  Napi::Value zeroGrad(const Napi::CallbackInfo& info);
  Napi::Value stateTensors(const Napi::CallbackInfo& info);
  Napi::Value saveState(const Napi::CallbackInfo& info);
  Napi::Value loadState(const Napi::CallbackInfo& info);

  // Touched only on the engine thread of `device`, where this trainer's calls run one at a time
  // in the order JS made them (the first one builds `trainer`).
  struct State {
    at::Device device = at::kCPU;
    std::unique_ptr<Trainer> trainer;
    std::string failure;  // why building the trainer failed
    Trainer& get();       // the trainer, or the construction error thrown
  };
  std::shared_ptr<State> state_;
};

}  // namespace octo::binding
