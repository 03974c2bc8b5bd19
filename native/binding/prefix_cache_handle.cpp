#include "binding/prefix_cache_handle.h"

#include "binding/addon_data.h"

namespace octo::binding {

namespace {
struct NewHandle {
  std::weak_ptr<DecoderModel> owner;
};
}  // namespace

Napi::Function PrefixCacheHandle::define(Napi::Env env) {
  return DefineClass(env, "PrefixCache",
                     {
                         InstanceMethod<&PrefixCacheHandle::clear>("clear"),
                         InstanceAccessor<&PrefixCacheHandle::sequences>("sequences"),
                         InstanceAccessor<&PrefixCacheHandle::tokens>("tokens"),
                         InstanceAccessor<&PrefixCacheHandle::bytes>("bytes"),
                     });
}

Napi::Object PrefixCacheHandle::wrap(Napi::Env env, std::weak_ptr<DecoderModel> owner) {
  NewHandle init{std::move(owner)};
  // The External only lives through the constructor call below, which copies what it holds.
  return env.GetInstanceData<AddonData>()->prefixCacheConstructor.New({Napi::External<NewHandle>::New(env, &init)});
}

PrefixCacheHandle::PrefixCacheHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PrefixCacheHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "prefix caches come from model.createPrefixCache(), not from `new`");
  owner_ = info[0].As<Napi::External<NewHandle>>().Data()->owner;
  cache_ = std::make_shared<PrefixCache>();
}

std::shared_ptr<PrefixCache> PrefixCacheHandle::unwrapFor(const Napi::Value& value, const std::shared_ptr<DecoderModel>& model) {
  Napi::Env env = value.Env();
  Napi::Function constructor = env.GetInstanceData<AddonData>()->prefixCacheConstructor.Value();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(constructor))
    throw Napi::TypeError::New(env, "options.prefixCache must come from model.createPrefixCache()");
  PrefixCacheHandle* handle = Unwrap(value.As<Napi::Object>());
  if (handle->owner_.lock() != model)
    throw Napi::TypeError::New(env, "this prefix cache was made by another model; its keys and values do not fit this one");
  return handle->cache_;
}

Napi::Value PrefixCacheHandle::clear(const Napi::CallbackInfo& info) {
  cache_->clear();
  return info.Env().Undefined();
}

Napi::Value PrefixCacheHandle::sequences(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cache_->sequenceCount()));
}

Napi::Value PrefixCacheHandle::tokens(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cache_->tokenCount()));
}

Napi::Value PrefixCacheHandle::bytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cache_->bytes()));
}

}  // namespace octo::binding
