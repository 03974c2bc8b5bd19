// The low-level `ops` of the addon (lib/engine/ops.ts): token log-probs, the fused policy loss,
// AdamW and the kernel benches, over plain typed arrays. Each op takes one arguments object.
#pragma once

#include "binding/napi_util.h"

namespace octo::binding {

// Adds ops.tokenLogprobs, ops.policyLoss, ops.adamw, ops.deviceMemory, ops.benchPolicyLoss and the
// class ops.EagerModel (binding/eager_model_handle.h) to `exports`.
void defineOps(Napi::Env env, Napi::Object exports);

}  // namespace octo::binding
