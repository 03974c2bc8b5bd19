// JS handle of a c10d process group (`NativeProcessGroup` in lib/native.ts): made by
// createProcessGroup(), passed to Trainer.enableDataParallel, and used by lib/engine/distributed.ts for
// the small reductions of the control layer (counts, metrics, flags).
#pragma once

#include "binding/napi_util.h"
#include "core/distributed.h"

namespace octo::binding {

class ProcessGroupHandle : public Napi::ObjectWrap<ProcessGroupHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<DistributedGroup> group);
  // The group behind a JS handle (a TypeError for anything else).
  static std::shared_ptr<DistributedGroup> unwrap(const Napi::Value& value);

  explicit ProcessGroupHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value allReduce(const Napi::CallbackInfo& info);
  Napi::Value barrier(const Napi::CallbackInfo& info);
  Napi::Value shutdown(const Napi::CallbackInfo& info);
  Napi::Value rank(const Napi::CallbackInfo& info);
  Napi::Value worldSize(const Napi::CallbackInfo& info);
  Napi::Value backend(const Napi::CallbackInfo& info);

  std::shared_ptr<DistributedGroup> group_;
};

// Adds createProcessGroup(options) -> Promise<ProcessGroup> and distributedBackends() to `exports`.
void defineDistributed(Napi::Env env, Napi::Object exports);

}  // namespace octo::binding
