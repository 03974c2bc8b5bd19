// JS handle of a PrefixCache (interface `NativePrefixCache` in lib/native.ts), made by
// Model.createPrefixCache() and usable only with that model.
#pragma once

#include "binding/napi_util.h"

namespace octo::binding {

class PrefixCacheHandle : public Napi::ObjectWrap<PrefixCacheHandle> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object wrap(Napi::Env env, std::weak_ptr<DecoderModel> owner);
  // The cache behind `value` when it is a handle made for `model`; throws a TypeError otherwise.
  static std::shared_ptr<PrefixCache> unwrapFor(const Napi::Value& value, const std::shared_ptr<DecoderModel>& model);

  explicit PrefixCacheHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value clear(const Napi::CallbackInfo& info);
  Napi::Value sequences(const Napi::CallbackInfo& info);
  Napi::Value tokens(const Napi::CallbackInfo& info);
  Napi::Value bytes(const Napi::CallbackInfo& info);

  std::shared_ptr<PrefixCache> cache_;
  std::weak_ptr<DecoderModel> owner_;  // keys/values only fit the model that made them
};

}  // namespace octo::binding
