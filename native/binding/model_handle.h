// JS handle of one loaded DecoderModel (class `Model` in lib/native.ts).
#pragma once

#include "binding/napi_util.h"

namespace octo::binding {

class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  // Wraps `model` in a new JS handle (constructor stored in the addon's instance data).
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<DecoderModel> model);

  // The model behind a JS handle (throws a TypeError for anything else, or once disposed).
  static std::shared_ptr<DecoderModel> unwrap(const Napi::Value& value);

  explicit ModelHandle(const Napi::CallbackInfo& info);
  void Finalize(Napi::Env env) override;

 private:
  std::shared_ptr<DecoderModel> model(const Napi::Env& env) const;  // throws once disposed
  void releaseMemory(Napi::Env env);

  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value generate(const Napi::CallbackInfo& info);
  Napi::Value sequenceLogprobs(const Napi::CallbackInfo& info);
  Napi::Value createPrefixCache(const Napi::CallbackInfo& info);
  Napi::Value parameters(const Napi::CallbackInfo& info);
  Napi::Value saveSafetensors(const Napi::CallbackInfo& info);
  Napi::Value attachAdapters(const Napi::CallbackInfo& info);
  Napi::Value withoutAdapters(const Napi::CallbackInfo& info);
  Napi::Value adapterParameters(const Napi::CallbackInfo& info);
  Napi::Value nonFiniteParameters(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value parameterBytes(const Napi::CallbackInfo& info);

  std::shared_ptr<DecoderModel> model_;
  int64_t reportedBytes_ = 0;  // external memory reported to V8 for this handle
};

}  // namespace octo::binding
