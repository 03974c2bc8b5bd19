#include "binding/model_handle.h"

#include "binding/addon_data.h"
#include "core/logprobs.h"
#include "binding/prefix_cache_handle.h"

namespace octo::binding {

Napi::Function ModelHandle::define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {
                         InstanceMethod<&ModelHandle::forward>("forward"),
                         InstanceMethod<&ModelHandle::generate>("generate"),
                         InstanceMethod<&ModelHandle::sequenceLogprobs>("sequenceLogprobs"),
                         InstanceMethod<&ModelHandle::createPrefixCache>("createPrefixCache"),
                         InstanceMethod<&ModelHandle::parameters>("parameters"),
                         InstanceMethod<&ModelHandle::saveSafetensors>("saveSafetensors"),
                         InstanceMethod<&ModelHandle::attachAdapters>("attachAdapters"),
                         InstanceMethod<&ModelHandle::withoutAdapters>("withoutAdapters"),
                         InstanceMethod<&ModelHandle::adapterParameters>("adapterParameters"),
                         InstanceMethod<&ModelHandle::nonFiniteParameters>("nonFiniteParameters"),
                         InstanceMethod<&ModelHandle::dispose>("dispose"),
                         InstanceAccessor<&ModelHandle::disposed>("disposed"),
                         InstanceAccessor<&ModelHandle::device>("device"),
                         InstanceAccessor<&ModelHandle::dtype>("dtype"),
                         InstanceAccessor<&ModelHandle::parameterBytes>("parameterBytes"),
                     });
}

Napi::Object ModelHandle::wrap(Napi::Env env, std::shared_ptr<DecoderModel> model) {
  auto* holder = new std::shared_ptr<DecoderModel>(std::move(model));
  Napi::External<std::shared_ptr<DecoderModel>> external = Napi::External<std::shared_ptr<DecoderModel>>::New(
      env, holder, [](Napi::Env, std::shared_ptr<DecoderModel>* p) { delete p; });
  return env.GetInstanceData<AddonData>()->modelConstructor.New({external});
}

std::shared_ptr<DecoderModel> ModelHandle::unwrap(const Napi::Value& value) {
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(env.GetInstanceData<AddonData>()->modelConstructor.Value()))
    throw Napi::TypeError::New(env, "expected a native Model handle");
  return Unwrap(value.As<Napi::Object>())->model(env);
}

ModelHandle::ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "Model handles come from loadModel/createModel, not from `new`");
  model_ = *info[0].As<Napi::External<std::shared_ptr<DecoderModel>>>().Data();
  // CPU weights live outside V8's heap: tell the GC, so it collects dropped handles in time (a view
  // of another model's weights holds none of its own).
  if (model_->device().is_cpu() && !model_->sharesWeights()) {
    reportedBytes_ = model_->parameterBytes();
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reportedBytes_);
  }
}

void ModelHandle::releaseMemory(Napi::Env env) {
  if (reportedBytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(env, -reportedBytes_);
  reportedBytes_ = 0;
  if (!model_) return;
  // Calls still in flight hold their own reference. The weights are freed on the engine thread,
  // after those calls: unmapping gigabytes must not stall the JS thread.
  const at::Device device = model_->device();
  postEngineJob(device, [model = std::move(model_)]() mutable { model.reset(); });
  model_.reset();
}

void ModelHandle::Finalize(Napi::Env env) { releaseMemory(env); }

std::shared_ptr<DecoderModel> ModelHandle::model(const Napi::Env& env) const {
  if (!model_) throw Napi::Error::New(env, "this model was disposed; load it again");
  return model_;
}

Napi::Value ModelHandle::dispose(const Napi::CallbackInfo& info) {
  releaseMemory(info.Env());
  return info.Env().Undefined();
}

Napi::Value ModelHandle::disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value ModelHandle::device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), model(info.Env())->device().str());
}

Napi::Value ModelHandle::dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), c10::toString(model(info.Env())->dtype()));
}

Napi::Value ModelHandle::parameterBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(model(info.Env())->parameterBytes()));
}

// forward({inputIds: Int32Array, batch, length, positions?: Int32Array, keyValid?: Uint8Array, output?})
//   -> Promise<Float32Array>; lib/engine/model.ts checked the sizes. output "logits" (default):
//   [batch, length, vocab]; "last": [batch, vocab] at each row's last real token (keyValid), the
//   LM head computed for those positions only. The array is the engine's own memory (no copy),
//   freed when JS drops it.
Napi::Value ModelHandle::forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    Napi::Object o = requireObject(info[0], "options");
    const int64_t batch = requireInt(o, "batch"), length = requireInt(o, "length");
    const std::string output = optionalString(o, "output", "logits");
    if (output != "logits" && output != "last")
      throw Napi::TypeError::New(env, "options.output must be 'logits' or 'last' (got '" + output + "')");
    std::vector<int64_t> ids = int32ArrayToVector(o.Get("inputIds"), "options.inputIds");
    std::vector<int64_t> positions;
    if (!o.Get("positions").IsUndefined()) positions = int32ArrayToVector(o.Get("positions"), "options.positions");
    std::vector<uint8_t> keyValid;
    if (!o.Get("keyValid").IsUndefined()) {
      Napi::Uint8Array mask = o.Get("keyValid").As<Napi::Uint8Array>();
      keyValid.assign(mask.Data(), mask.Data() + mask.ElementLength());
    }
    const bool lastOnly = output == "last";
    using Result = std::shared_ptr<at::Tensor>;
    return PromiseWorker<Result>::start(
        env, m->device(),
        [m, ids = std::move(ids), positions = std::move(positions), keyValid = std::move(keyValid), batch, length, lastOnly]() {
          c10::InferenceMode inference;
          const int64_t vocab = m->spec().vocabSize;
          const at::Device device = m->device();
          at::Tensor input = at::tensor(ids, at::kLong).view({batch, length});
          TORCH_CHECK(input.min().item<int64_t>() >= 0 && input.max().item<int64_t>() < vocab,
                      "inputIds holds a token id outside the model's vocabulary [0, ", vocab, ")");
          at::Tensor pos = positions.empty() ? at::arange(length, at::kLong).expand({batch, length}).contiguous()
                                             : at::tensor(positions, at::kLong).view({batch, length});
          at::Tensor valid;
          if (!keyValid.empty()) valid = at::tensor(std::vector<int64_t>(keyValid.begin(), keyValid.end()), at::kLong).view({batch, length}) != 0;
          at::Tensor hidden = m->hiddenStates(input.to(device), pos.to(device), nullptr, valid.defined() ? valid.to(device) : valid);
          if (lastOnly) {
            // The last real token of each row: the highest valid index (padding may sit on either side).
            at::Tensor last = valid.defined()
                                  ? (valid.to(at::kLong) * at::arange(length, at::kLong)).amax(1)
                                  : at::full({batch}, length - 1, at::kLong);
            hidden = hidden.index({at::arange(batch, at::kLong).to(device), last.to(device)});  // [batch, C]
          }
          return std::make_shared<at::Tensor>(m->logits(hidden).to(at::kCPU, at::kFloat).contiguous());
        },
        [](Napi::Env env, Result& logits) -> Napi::Value { return tensorAsFloat32Array(env, std::move(*logits)); });
  });
}

// generate(requests: {promptIds: Int32Array, samples, seed}[], params, options: {prefixCache?, recompute, staticShapes})
//   -> Promise<{tokens: Int32Array, logprobs: Float32Array, sampleOffsets: Int32Array, finishReasons: Uint8Array, stats}>
// Samples are flattened request-major: sample j of request i is sample Σ_{k<i} n_k + j, its
// tokens and log-probs lie at [sampleOffsets[s], sampleOffsets[s + 1]).
Napi::Value ModelHandle::generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "requests must be an array");
    Napi::Array array = info[0].As<Napi::Array>();
    std::vector<GenerationRequest> requests;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      Napi::Object o = requireObject(array.Get(i), "request");
      GenerationRequest r;
      r.promptIds = int32ArrayToVector(o.Get("promptIds"), "request.promptIds");
      r.samples = getInt(o, "samples", "request");
      r.seed = static_cast<uint64_t>(getInt(o, "seed", "request"));
      requests.push_back(std::move(r));
    }
    SamplingParams params = toSamplingParams(info[1]);
    Napi::Object o = requireObject(info[2], "generate options");
    std::shared_ptr<PrefixCache> prefixCache;
    if (!o.Get("prefixCache").IsUndefined()) prefixCache = PrefixCacheHandle::unwrapFor(o.Get("prefixCache"), m);
    GenerationOptions options;
    options.recompute = getBool(o, "recompute", "options");
    // CUDA always decodes in the static-shape layout its graphs need.
    options.staticShapes = getBool(o, "staticShapes", "options") || m->device().is_cuda();
    options.prefillChunkTokens = getInt(o, "prefillChunkTokens", "options");
    using Result = std::shared_ptr<GenerationOutput>;
    return PromiseWorker<Result>::start(
        env, m->device(),
        [m, requests = std::move(requests), params, options, prefixCache]() mutable {
          options.prefixCache = prefixCache.get();
          return std::make_shared<GenerationOutput>(octo::generate(*m, requests, params, options));
        },
        [](Napi::Env env, Result& output) -> Napi::Value {
          size_t samples = 0, tokens = 0;
          for (const auto& request : output->samples)
            for (const auto& sample : request) {
              ++samples;
              tokens += sample.tokens.size();
            }
          Napi::Int32Array tokenIds = Napi::Int32Array::New(env, tokens);
          Napi::Float32Array logprobs = Napi::Float32Array::New(env, tokens);
          Napi::Int32Array offsets = Napi::Int32Array::New(env, samples + 1);
          Napi::Uint8Array reasons = Napi::Uint8Array::New(env, samples);
          size_t s = 0, t = 0;
          for (const auto& request : output->samples)
            for (const auto& sample : request) {
              offsets[s] = static_cast<int32_t>(t);
              reasons[s] = static_cast<uint8_t>(sample.finishReason);
              for (size_t k = 0; k < sample.tokens.size(); ++k, ++t) {
                tokenIds[t] = static_cast<int32_t>(sample.tokens[k]);
                logprobs[t] = sample.logprobs[k];
              }
              ++s;
            }
          offsets[s] = static_cast<int32_t>(t);
          const GenerationStats& st = output->stats;
          Napi::Object stats = Napi::Object::New(env);
          stats.Set("promptTokens", static_cast<double>(st.promptTokens));
          stats.Set("reusedPromptTokens", static_cast<double>(st.reusedPromptTokens));
          stats.Set("prefillSlots", static_cast<double>(st.prefillSlots));
          stats.Set("prefillChunks", static_cast<double>(st.prefillChunks));
          stats.Set("decodeSteps", static_cast<double>(st.decodeSteps));
          stats.Set("decodeRowSteps", static_cast<double>(st.decodeRowSteps));
          stats.Set("generatedTokens", static_cast<double>(st.generatedTokens));
          stats.Set("compactions", static_cast<double>(st.compactions));
          Napi::Object out = Napi::Object::New(env);
          out.Set("tokens", tokenIds);
          out.Set("logprobs", logprobs);
          out.Set("sampleOffsets", offsets);
          out.Set("finishReasons", reasons);
          out.Set("stats", stats);
          return out;
        });
  });
}

// sequenceLogprobs({inputIds: Int32Array, batch, length, attentionMask: Uint8Array, temperature, chunkSize})
//   -> Promise<Float32Array> [batch, length]: log p(token t | tokens < t), 0 at t = 0 and at padding
Napi::Value ModelHandle::sequenceLogprobs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    Napi::Object o = requireObject(info[0], "options");
    const int64_t batch = requireInt(o, "batch"), length = requireInt(o, "length");
    at::Tensor ids = int32ArrayToTensor(o.Get("inputIds"), "options.inputIds", {batch, length});
    at::Tensor mask = uint8ArrayToTensor(o.Get("attentionMask"), "options.attentionMask", {batch, length});
    const double temperature = requireNumber(o, "temperature");
    const int64_t chunkSize = requireInt(o, "chunkSize");
    using Result = std::shared_ptr<at::Tensor>;
    return PromiseWorker<Result>::start(
        env, m->device(),
        [m, ids, mask, temperature, chunkSize]() {
          return std::make_shared<at::Tensor>(octo::sequenceLogprobs(*m, ids.to(at::kLong), mask != 0, temperature, chunkSize));
        },
        [](Napi::Env env, Result& lp) -> Napi::Value { return tensorToFloat32Array(env, *lp); });
  });
}

// createPrefixCache() -> PrefixCache usable with this model's generate
Napi::Value ModelHandle::createPrefixCache(const Napi::CallbackInfo& info) {
  return PrefixCacheHandle::wrap(info.Env(), model(info.Env()));
}

// parameters() -> [{name, shape}] in Hugging Face order
Napi::Value ModelHandle::parameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return namedShapesToJs(env, tensorShapes(model(env)->namedParameters()));
}

// nonFiniteParameters() -> Promise<{name, count}[]>: the parameters holding NaN or ±Inf values and
//   how many each holds, in Hugging Face order (none: an empty array)
Napi::Value ModelHandle::nonFiniteParameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    using Result = std::vector<std::pair<std::string, int64_t>>;
    return PromiseWorker<Result>::start(
        env, m->device(),
        [m]() {
          const std::vector<int64_t> counts = m->nonFiniteCounts();
          auto parameters = m->namedParameters();
          for (const auto& adapter : m->adapterParameters()) parameters.push_back(adapter);
          Result out;
          for (size_t i = 0; i < counts.size(); ++i)
            if (counts[i] > 0) out.emplace_back(parameters[i].first, counts[i]);
          return out;
        },
        [](Napi::Env env, Result& found) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, found.size());
          for (size_t i = 0; i < found.size(); ++i) {
            Napi::Object entry = Napi::Object::New(env);
            entry.Set("name", found[i].first);
            entry.Set("count", static_cast<double>(found[i].second));
            out.Set(static_cast<uint32_t>(i), entry);
          }
          return out;
        });
  });
}

// saveSafetensors(path, header: Buffer, names: string[], dtypes: string[], merged = false) -> Promise<void>
// `header` is the complete prefix (length + JSON + padding) built by lib/engine/safetensors.ts.
// Names are base parameters (Hugging Face) or adapter tensors (PEFT). `merged`: each base weight
// with its LoRA adapter merged in (W + scale · B A), computed one tensor at a time while writing.
Napi::Value ModelHandle::saveSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    Napi::Buffer<char> headerBuffer = info[1].As<Napi::Buffer<char>>();
    std::string header(headerBuffer.Data(), headerBuffer.Length());
    Napi::Array names = info[2].As<Napi::Array>(), dtypes = info[3].As<Napi::Array>();
    const bool merged = info.Length() > 4 && info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
    std::vector<std::string> tensorNames;
    std::vector<at::ScalarType> types;
    for (uint32_t i = 0; i < names.Length(); ++i) {
      tensorNames.push_back(names.Get(i).As<Napi::String>().Utf8Value());
      m->parameter(tensorNames.back());  // an unknown name fails here, before the engine call
      types.push_back(scalarTypeFromSafetensors(dtypes.Get(i).As<Napi::String>().Utf8Value()));
    }
    return PromiseWorker<bool>::start(
        env, m->device(),
        [m, path, header = std::move(header), tensorNames = std::move(tensorNames), types = std::move(types), merged]() {
          writeSafetensors(path, header, [&](size_t i) { return merged ? m->mergedParameter(tensorNames[i]) : m->parameter(tensorNames[i]); },
                           types);
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// attachAdapters({rank, alpha, dropout, targetModules, seed}, records?: TensorRecord[]) -> Promise<void>:
// LoRA adapters on the targeted projections (native/core/lora.h), read from `records` (a PEFT
// adapter_model.safetensors, checked by lib/engine/lora.ts) or, without them, freshly initialised.
Napi::Value ModelHandle::attachAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    Napi::Object o = requireObject(info[0], "lora config");
    LoraConfig config;
    config.rank = requireInt(o, "rank");
    config.alpha = requireNumber(o, "alpha");
    config.dropout = requireNumber(o, "dropout");
    config.seed = static_cast<uint64_t>(requireInt(o, "seed"));
    Napi::Value modules = requireKey(o, "targetModules", "lora config");
    if (!modules.IsArray()) throw Napi::TypeError::New(env, "lora config.targetModules must be an array of module names");
    Napi::Array array = modules.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); ++i) config.targetModules.push_back(array.Get(i).As<Napi::String>().Utf8Value());
    checkLoraConfig(config);
    std::vector<TensorRecord> records;
    if (info.Length() > 1 && !info[1].IsUndefined()) records = toTensorRecords(info[1]);
    return PromiseWorker<bool>::start(
        env, m->device(),
        [m, config, records = std::move(records)]() {
          SafetensorsReader reader;
          std::unordered_map<std::string, at::Tensor> adapters;
          for (const auto& record : records) adapters.emplace(record.name, reader.read(record));
          m->attachAdapters(config, std::move(adapters));
          return true;
        },
        [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
  });
}

// withoutAdapters() -> Promise<Model>: the same base weights (shared) with no adapters
Napi::Value ModelHandle::withoutAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto m = model(env);
    using Result = std::shared_ptr<DecoderModel>;
    return PromiseWorker<Result>::start(
        env, m->device(), [m]() { return m->withoutAdapters(); },
        [](Napi::Env env, Result& view) -> Napi::Value { return ModelHandle::wrap(env, view); });
  });
}

// adapterParameters() -> [{name, shape}]: the LoRA tensors under their PEFT names (empty without LoRA)
Napi::Value ModelHandle::adapterParameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return namedShapesToJs(env, tensorShapes(model(env)->adapterParameters()));
}

}  // namespace octo::binding
