// Per-environment state of the addon (one per Node worker thread that loads it).
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

namespace octo::binding {

class EngineCall;
struct EngineCompletions;
void settleEngineCall(Napi::Env env, Napi::Function, EngineCompletions* completions, EngineCall* call);

// How finished engine calls come back to this environment's JS thread: one thread-safe
// function, referenced (keeping the event loop alive) only while calls are in flight.
struct EngineCompletions {
  using Function = Napi::TypedThreadSafeFunction<EngineCompletions, EngineCall, settleEngineCall>;
  Function function;
  int64_t inFlight = 0;  // JS thread only
  // Engine threads hand calls over under this lock, and only while the environment is open:
  // its cleanup hook closes it before Node tears the thread-safe function down.
  std::mutex mutex;
  bool open = true;
};

struct AddonData {
  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference prefixCacheConstructor;
  Napi::FunctionReference processGroupConstructor;
  std::shared_ptr<EngineCompletions> completions;
};

// Sets up `data->completions` for `env` (at module init).
void openEngineCompletions(Napi::Env env, AddonData* data);

}  // namespace octo::binding
