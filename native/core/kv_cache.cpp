#include "core/kv_cache.h"

#include <algorithm>
#include <unordered_set>

#include "core/model.h"

namespace octo {

KVCache newCache(const DecoderModel& model, int64_t batch, int64_t maxLength) {
  const ModelSpec& spec = model.spec();
  KVCache cache;
  cache.maxLength = maxLength;
  const auto options = at::TensorOptions().device(model.device()).dtype(model.dtype());
  // Zeros, not empty: masked slots (padding, slots not written yet) still enter probs @ values
  // with weight 0, and 0 * (NaN garbage) would be NaN.
  for (int64_t i = 0; i < spec.numLayers; ++i) {
    cache.keys.push_back(at::zeros({batch, spec.numKvHeads, maxLength, spec.headDim}, options));
    cache.values.push_back(at::zeros({batch, spec.numKvHeads, maxLength, spec.headDim}, options));
  }
  cache.keyValid = at::zeros({batch, maxLength}, at::TensorOptions().device(model.device()).dtype(at::kBool));
  return cache;
}

std::pair<at::Tensor, at::Tensor> KVCache::append(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  if (writeSlot.defined()) {
    keys[layer].index_copy_(2, writeSlot, k);
    values[layer].index_copy_(2, writeSlot, v);
    return {keys[layer], values[layer]};  // [B, Hkv, maxLength, D]
  }
  const int64_t T = k.size(2);
  keys[layer].narrow(2, length, T).copy_(k);
  values[layer].narrow(2, length, T).copy_(v);
  return {keys[layer].narrow(2, 0, length + T), values[layer].narrow(2, 0, length + T)};  // [B, Hkv, S, D]
}

at::Tensor KVCache::appendValid(const at::Tensor& valid) {
  if (writeSlot.defined()) {
    keyValid.index_copy_(1, writeSlot, valid);
    return keyValid;  // [B, maxLength]
  }
  const int64_t T = valid.size(1);
  keyValid.narrow(1, length, T).copy_(valid);
  return keyValid.narrow(1, 0, length + T);  // [B, S]
}

void KVCache::advance(int64_t T) {
  if (!writeSlot.defined()) length += T;
}

KVCache selectRows(const KVCache& cache, const at::Tensor& rows) {
  KVCache out;
  out.length = cache.length;
  out.maxLength = cache.maxLength;
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    out.keys.push_back(cache.keys[l].index_select(0, rows));  // [R', Hkv, S, D]
    out.values.push_back(cache.values[l].index_select(0, rows));
  }
  out.keyValid = cache.keyValid.index_select(0, rows);  // [R', S]
  if (cache.writeSlot.defined()) out.writeSlot = cache.writeSlot;
  return out;
}

void copyRows(const KVCache& source, const at::Tensor& from, KVCache& target, const at::Tensor& to, int64_t targetSlot) {
  const int64_t S = source.maxLength;
  TORCH_CHECK(targetSlot >= 0 && targetSlot + S <= target.maxLength, "copyRows: slots [", targetSlot, ", ",
              targetSlot + S, ") do not fit a cache of ", target.maxLength);
  for (size_t l = 0; l < source.keys.size(); ++l) {
    target.keys[l].narrow(2, targetSlot, S).index_copy_(0, to, source.keys[l].index_select(0, from));
    target.values[l].narrow(2, targetSlot, S).index_copy_(0, to, source.values[l].index_select(0, from));
  }
  target.keyValid.narrow(1, targetSlot, S).index_copy_(0, to, source.keyValid.index_select(0, from));
}

namespace {

bool tokensLess(const std::shared_ptr<const CachedSequence>& a, const std::vector<int64_t>& b) { return a->tokens < b; }

int64_t commonPrefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const auto n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int64_t>(i);
}

}  // namespace

PrefixCache::Match PrefixCache::longestPrefix(const std::vector<int64_t>& tokens) const {
  std::lock_guard<std::mutex> lock(mutex_);
  Match best;
  auto at = std::lower_bound(sorted_.begin(), sorted_.end(), tokens, tokensLess);
  for (auto it : {at, at == sorted_.begin() ? sorted_.end() : at - 1}) {
    if (it == sorted_.end()) continue;
    const int64_t length = commonPrefix((*it)->tokens, tokens);
    if (length > best.length) best = {*it, length};
  }
  return best;
}

void PrefixCache::replace(std::vector<std::shared_ptr<const CachedSequence>> sequences) {
  std::sort(sequences.begin(), sequences.end(),
            [](const auto& a, const auto& b) { return a->tokens < b->tokens; });
  std::lock_guard<std::mutex> lock(mutex_);
  sorted_ = std::move(sequences);
}

void PrefixCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  sorted_.clear();
}

int64_t PrefixCache::sequenceCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(sorted_.size());
}

int64_t PrefixCache::tokenCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t n = 0;
  for (const auto& s : sorted_) n += static_cast<int64_t>(s->tokens.size());
  return n;
}

int64_t PrefixCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::unordered_set<const CachedRows*> seen;
  int64_t total = 0;
  for (const auto& s : sorted_) {
    if (!seen.insert(s->rows.get()).second) continue;
    for (const auto* list : {&s->rows->keys, &s->rows->values})
      for (const auto& t : *list) total += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return total;
}

}  // namespace octo
