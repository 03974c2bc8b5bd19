// The KV cache of the decoder (model.h): its layout, creation, append and row operations, and
// the prefix cache that keeps the keys and values of finished sequences for a later generate
// call (multi-turn continuation, docs/methods.md §3).
//
// Shape legend: B = rows, R = cache rows, Hkv = key/value heads, S = cache slots, D = head dim,
// T = new tokens per row, L = tokens.
#pragma once

#include <mutex>

#include "core/torch_prelude.h"

namespace octo {

class DecoderModel;

// Preallocated keys and values for incremental decoding: per layer [B, Hkv, maxLength, D].
struct KVCache {
  std::vector<at::Tensor> keys, values;
  at::Tensor keyValid;   // [B, maxLength] bool: false for padding slots
  int64_t length = 0;    // slots filled so far (same for every row)
  int64_t maxLength = 0;
  // Static-shape decode (the CUDA-graph layout): when defined, a [1] long tensor on the
  // cache's device naming the slot the one new token per row is written to. Attention then
  // spans all maxLength slots (unwritten ones have keyValid false), so every step has the
  // same shapes and reads no host state; `length` is neither read nor advanced.
  at::Tensor writeSlot;

  // Writes layer `layer`'s new keys `k` and values `v` [B, Hkv, T, D] into the slots after the
  // `length` filled ones (at writeSlot in the static-shape layout) and returns the keys and
  // values attention reads: [B, Hkv, S, D], S = length + T (maxLength in the static layout).
  // `length` itself advances once per forward, after every layer has appended (advance()).
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // Marks the new tokens' slots valid or padding (`valid` [B, T] bool) and returns keyValid
  // over the slots attention reads: [B, S].
  at::Tensor appendValid(const at::Tensor& valid);
  // After a forward of T new tokens per row (no-op in the static-shape layout).
  void advance(int64_t T);
};

// A zeroed cache of `batch` rows and `maxLength` slots, on the model's device and in its dtype.
KVCache newCache(const DecoderModel& model, int64_t batch, int64_t maxLength);

// The rows `rows` [R'] (long, on the cache's device) of `cache`, in that order, with the same
// slots and length: copies prompt rows out to their samples, and drops finished rows.
KVCache selectRows(const KVCache& cache, const at::Tensor& rows);

// Copies rows `from` of `source` into rows `to` of `target`, slot range [0, source.maxLength)
// of `source` landing at [targetSlot, targetSlot + source.maxLength) of `target`.
void copyRows(const KVCache& source, const at::Tensor& from, KVCache& target, const at::Tensor& to, int64_t targetSlot);

// Keys and values of some rows of a finished generate call, narrowed to the slots it used.
struct CachedRows {
  std::vector<at::Tensor> keys, values;  // per layer [R, Hkv, S, D]
};

// One sequence whose keys and values can be reused: tokens[i] sits at slot slots[i] of row
// `row` of `rows`. Immutable once made, so calls in flight can keep using it.
struct CachedSequence {
  std::vector<int64_t> tokens;
  std::shared_ptr<const CachedRows> rows;
  int64_t row = 0;
  at::Tensor slots;  // [L] long on the cache's device
};

// The sequences (prompt + generated tokens) of the last generate call it was given to.
// Causal attention makes the keys and values of a token depend only on the tokens before
// it, so any common prefix of a cached sequence and a new prompt can be reused exactly.
// Thread-safe: concurrent calls may look up while another replaces the contents.
class PrefixCache {
 public:
  struct Match {
    std::shared_ptr<const CachedSequence> sequence;
    int64_t length = 0;  // tokens shared with the query, from its start
  };

  // The cached sequence sharing the longest prefix with `tokens` (length 0 when none).
  Match longestPrefix(const std::vector<int64_t>& tokens) const;
  void replace(std::vector<std::shared_ptr<const CachedSequence>> sequences);
  void clear();

  int64_t sequenceCount() const;
  int64_t tokenCount() const;
  int64_t bytes() const;  // of the key/value tensors held (each shared block counted once)

 private:
  mutable std::mutex mutex_;
  // Sorted by tokens, lexicographically: the longest common prefix with a query is then found
  // at one of the two neighbours of its insertion point (binary search, no trie).
  std::vector<std::shared_ptr<const CachedSequence>> sorted_;
};

}  // namespace octo
