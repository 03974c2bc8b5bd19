// Engine calls: posted from the JS thread to a device's engine thread, settled back on the JS
// thread through the environment's thread-safe function (addon_data.h).
#include "binding/addon_data.h"
#include "binding/napi_util.h"
#include "core/device_thread.h"

namespace octo::binding {

void settleEngineCall(Napi::Env env, Napi::Function, EngineCompletions* completions, EngineCall* call) {
  // No env: Node is tearing the function down with this call still queued. Its JS references
  // may only be released on a live JS thread, so it is left to the process's end.
  if (env == nullptr) return;
  if (--completions->inFlight == 0) completions->function.Unref(env);
  call->settle(env);
  delete call;
}

void openEngineCompletions(Napi::Env env, AddonData* data) {
  auto completions = std::make_shared<EngineCompletions>();
  completions->function = EngineCompletions::Function::New(env, "octo-native engine", 0, 1, completions.get());
  completions->function.Unref(env);  // an idle addon does not keep the process alive
  // Registered after the function, so it runs before the function's own teardown.
  env.AddCleanupHook([completions]() {
    std::lock_guard<std::mutex> lock(completions->mutex);
    completions->open = false;
  });
  data->completions = std::move(completions);
}

void postEngineCall(Napi::Env env, const at::Device& device, EngineCall* call) {
  std::shared_ptr<EngineCompletions> completions = env.GetInstanceData<AddonData>()->completions;
  if (completions->inFlight++ == 0) completions->function.Ref(env);
  DeviceThread::of(device).post([completions, call]() {
    call->run();
    std::lock_guard<std::mutex> lock(completions->mutex);
    // A closed environment: the call (and what it holds) is left to the process's end, as above.
    if (completions->open) completions->function.NonBlockingCall(call);
  });
}

// The engine thread already stops a throwing job there and goes on (device_thread.cpp).
void postEngineJob(const at::Device& device, std::function<void()> job) { DeviceThread::of(device).post(std::move(job)); }

}  // namespace octo::binding
