// Per-environment state of the addon (one per Node worker thread that loads it).
#pragma once

#include <napi.h>

namespace octo::binding {

struct AddonData {
  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference prefixCacheConstructor;
  Napi::FunctionReference processGroupConstructor;
};

}  // namespace octo::binding
