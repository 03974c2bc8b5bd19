#include "binding/napi_util.h"

namespace octo::binding {

Napi::Object requireObject(const Napi::Value& value, const char* what) {
  if (!value.IsObject()) throw Napi::TypeError::New(value.Env(), std::string(what) + " must be an object");
  return value.As<Napi::Object>();
}

Napi::Value requireKey(const Napi::Object& object, const char* key, const char* owner) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull())
    throw Napi::TypeError::New(object.Env(), std::string(owner) + "." + key + " is required");
  return value;
}

double getNumber(const Napi::Object& object, const char* key, const char* owner) {
  Napi::Value value = requireKey(object, key, owner);
  if (!value.IsNumber()) throw Napi::TypeError::New(object.Env(), std::string(owner) + "." + key + " must be a number");
  return value.As<Napi::Number>().DoubleValue();
}

int64_t getInt(const Napi::Object& object, const char* key, const char* owner) {
  const double number = getNumber(object, key, owner);
  if (number != static_cast<double>(static_cast<int64_t>(number)))
    throw Napi::TypeError::New(object.Env(), std::string(owner) + "." + key + " must be an integer");
  return static_cast<int64_t>(number);
}

bool getBool(const Napi::Object& object, const char* key, const char* owner) {
  Napi::Value value = requireKey(object, key, owner);
  if (!value.IsBoolean()) throw Napi::TypeError::New(object.Env(), std::string(owner) + "." + key + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::string getString(const Napi::Object& object, const char* key, const char* owner) {
  Napi::Value value = requireKey(object, key, owner);
  if (!value.IsString()) throw Napi::TypeError::New(object.Env(), std::string(owner) + "." + key + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

namespace {
constexpr const char* kOptions = "options";
bool present(const Napi::Object& object, const char* key) {
  Napi::Value value = object.Get(key);
  return !value.IsUndefined() && !value.IsNull();
}
}  // namespace

double requireNumber(const Napi::Object& options, const char* key) { return getNumber(options, key, kOptions); }
int64_t requireInt(const Napi::Object& options, const char* key) { return getInt(options, key, kOptions); }
bool requireBool(const Napi::Object& options, const char* key) { return getBool(options, key, kOptions); }
std::string requireString(const Napi::Object& options, const char* key) { return getString(options, key, kOptions); }

double optionalNumber(const Napi::Object& options, const char* key, double fallback) {
  return present(options, key) ? requireNumber(options, key) : fallback;
}
int64_t optionalInt(const Napi::Object& options, const char* key, int64_t fallback) {
  return present(options, key) ? requireInt(options, key) : fallback;
}
bool optionalBool(const Napi::Object& options, const char* key, bool fallback) {
  return present(options, key) ? requireBool(options, key) : fallback;
}
std::string optionalString(const Napi::Object& options, const char* key, const std::string& fallback) {
  return present(options, key) ? requireString(options, key) : fallback;
}

std::vector<int64_t> getIntVector(const Napi::Value& value, const char* what) {
  if (!value.IsArray()) throw Napi::TypeError::New(value.Env(), std::string(what) + " must be an array of integers");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<int64_t> out(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsNumber()) throw Napi::TypeError::New(value.Env(), std::string(what) + " must be an array of integers");
    out[i] = item.As<Napi::Number>().Int64Value();
  }
  return out;
}

std::vector<int64_t> int32ArrayToVector(const Napi::Value& value, const char* what) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(value.Env(), std::string(what) + " must be an Int32Array");
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  return std::vector<int64_t>(array.Data(), array.Data() + array.ElementLength());
}

namespace {
template <typename TypedArray>
at::Tensor typedArrayToTensor(const Napi::Value& value, napi_typedarray_type type, const char* typeName, const char* what,
                              at::IntArrayRef shape, at::ScalarType dtype) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type)
    throw Napi::TypeError::New(value.Env(), std::string(what) + " must be a " + typeName);
  TypedArray array = value.As<TypedArray>();
  const int64_t expected = c10::multiply_integers(shape);
  if (static_cast<int64_t>(array.ElementLength()) != expected)
    throw Napi::RangeError::New(value.Env(), std::string(what) + " has " + std::to_string(array.ElementLength()) +
                                                 " elements; expected " + std::to_string(expected));
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (expected > 0) std::memcpy(tensor.data_ptr(), array.Data(), static_cast<size_t>(expected) * tensor.element_size());
  return tensor;
}
}  // namespace

at::Tensor float32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape) {
  return typedArrayToTensor<Napi::Float32Array>(value, napi_float32_array, "Float32Array", what, shape, at::kFloat);
}

at::Tensor int32ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape) {
  return typedArrayToTensor<Napi::Int32Array>(value, napi_int32_array, "Int32Array", what, shape, at::kInt);
}

at::Tensor uint8ArrayToTensor(const Napi::Value& value, const char* what, at::IntArrayRef shape) {
  return typedArrayToTensor<Napi::Uint8Array>(value, napi_uint8_array, "Uint8Array", what, shape, at::kByte);
}

Napi::Float32Array tensorToFloat32Array(Napi::Env env, const at::Tensor& tensor) {
  at::Tensor t = tensor.detach().to(at::kCPU, at::kFloat).contiguous();
  Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(t.numel()));
  if (t.numel() > 0) std::memcpy(out.Data(), t.data_ptr<float>(), static_cast<size_t>(t.numel()) * sizeof(float));
  return out;
}

Napi::Float32Array tensorAsFloat32Array(Napi::Env env, at::Tensor tensor) {
  TORCH_CHECK(tensor.is_cpu() && tensor.scalar_type() == at::kFloat && tensor.is_contiguous(),
              "tensorAsFloat32Array needs a contiguous CPU float32 tensor");
  const size_t count = static_cast<size_t>(tensor.numel());
  if (count == 0) return Napi::Float32Array::New(env, 0);
  auto* owner = new at::Tensor(std::move(tensor));
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, owner->data_ptr(), count * sizeof(float),
                                                    [](Napi::Env, void*, at::Tensor* held) { delete held; }, owner);
  return Napi::Float32Array::New(env, count, buffer, 0);
}

ModelSpec toModelSpec(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "model spec");
  const char* owner = "spec";
  ModelSpec s;
  s.architecture = getString(o, "architecture", owner);
  s.vocabSize = getInt(o, "vocabSize", owner);
  s.hiddenSize = getInt(o, "hiddenSize", owner);
  s.intermediateSize = getInt(o, "intermediateSize", owner);
  s.numLayers = getInt(o, "numLayers", owner);
  s.numHeads = getInt(o, "numHeads", owner);
  s.numKvHeads = getInt(o, "numKvHeads", owner);
  s.headDim = getInt(o, "headDim", owner);
  s.rmsNormEps = getNumber(o, "rmsNormEps", owner);
  s.ropeTheta = getNumber(o, "ropeTheta", owner);
  s.tieWordEmbeddings = getBool(o, "tieWordEmbeddings", owner);
  s.attentionBias = getBool(o, "attentionBias", owner);
  s.outputBias = getBool(o, "outputBias", owner);
  s.mlpBias = getBool(o, "mlpBias", owner);
  s.qkNorm = getBool(o, "qkNorm", owner);
  Napi::Object rope = requireObject(requireKey(o, "rope", owner), "spec.rope");
  s.ropeType = getString(rope, "type", "spec.rope");
  s.ropeFactor = getNumber(rope, "factor", "spec.rope");
  s.ropeLowFreqFactor = getNumber(rope, "lowFreqFactor", "spec.rope");
  s.ropeHighFreqFactor = getNumber(rope, "highFreqFactor", "spec.rope");
  s.ropeOriginalMaxPositions = getInt(rope, "originalMaxPositions", "spec.rope");
  return s;
}

PolicyLossOptions toPolicyLossOptions(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "loss options");
  PolicyLossOptions p;
  p.ratioLevel = parseRatioLevel(optionalString(o, "ratioLevel", "token"));
  p.clipLow = optionalNumber(o, "clipLow", p.clipLow);
  p.clipHigh = optionalNumber(o, "clipHigh", p.clipHigh);
  p.dualClip = optionalNumber(o, "dualClip", p.dualClip);
  p.klEstimator = parseKlEstimator(optionalString(o, "klEstimator", "k3"));
  p.klCoef = optionalNumber(o, "klCoef", p.klCoef);
  p.entropyCoef = optionalNumber(o, "entropyCoef", p.entropyCoef);
  p.aggregation = parseLossAggregation(optionalString(o, "aggregation", "token-mean"));
  return p;
}

LossNormalizers toNormalizers(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "normalizers");
  LossNormalizers n;
  n.lossTokens = getNumber(o, "lossTokens", "normalizers");
  n.klTokens = getNumber(o, "klTokens", "normalizers");
  n.sequences = getNumber(o, "sequences", "normalizers");
  n.maxLength = optionalNumber(o, "maxLength", 1.0);
  return n;
}

Napi::Object lossStatsToJs(Napi::Env env, const PolicyLossStats& stats) {
  Napi::Object out = Napi::Object::New(env);
#define OCTO_LOSS_STAT_TO_JS(name, comment) out.Set(#name, stats.name);
  OCTO_LOSS_STATS(OCTO_LOSS_STAT_TO_JS)
#undef OCTO_LOSS_STAT_TO_JS
  return out;
}

std::vector<TensorRecord> toTensorRecords(const Napi::Value& value) {
  if (!value.IsArray()) throw Napi::TypeError::New(value.Env(), "tensor records must be an array");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<TensorRecord> records;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Object o = requireObject(array.Get(i), "tensor record");
    TensorRecord r;
    r.name = getString(o, "name", "record");
    r.file = getString(o, "file", "record");
    r.dtype = scalarTypeFromSafetensors(getString(o, "dtype", "record"));
    r.shape = getIntVector(requireKey(o, "shape", "record"), "record.shape");
    r.offset = getInt(o, "offset", "record");
    r.byteLength = getInt(o, "byteLength", "record");
    records.push_back(std::move(r));
  }
  return records;
}

SamplingParams toSamplingParams(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "sampling params");
  const char* owner = "params";
  SamplingParams p;
  p.temperature = getNumber(o, "temperature", owner);
  p.topP = getNumber(o, "topP", owner);
  p.topK = getInt(o, "topK", owner);
  p.minP = getNumber(o, "minP", owner);
  p.maxNewTokens = getInt(o, "maxNewTokens", owner);
  p.eosTokenIds = getIntVector(requireKey(o, "eosTokenIds", owner), "params.eosTokenIds");
  Napi::Value stops = requireKey(o, "stopSequences", owner);
  if (!stops.IsArray()) throw Napi::TypeError::New(o.Env(), "params.stopSequences must be an array of Int32Array");
  Napi::Array stopArray = stops.As<Napi::Array>();
  for (uint32_t i = 0; i < stopArray.Length(); ++i)
    p.stopSequences.push_back(int32ArrayToVector(stopArray.Get(i), "params.stopSequences[i]"));
  return p;
}

Napi::Array namedShapesToJs(Napi::Env env, const std::vector<NamedShape>& items) {
  Napi::Array out = Napi::Array::New(env, items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    Napi::Object item = Napi::Object::New(env);
    item.Set("name", items[i].first);
    item.Set("shape", shapeToJs(env, items[i].second));
    out.Set(static_cast<uint32_t>(i), item);
  }
  return out;
}

Napi::Array shapeToJs(Napi::Env env, at::IntArrayRef shape) {
  Napi::Array out = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  return out;
}

}  // namespace octo::binding
