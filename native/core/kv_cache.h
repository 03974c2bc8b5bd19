// Operations on the KV cache of model.h, and the prefix cache that keeps the keys and values
// of finished sequences for a later generate call (multi-turn continuation, docs/methods.md §3).
//
// Shape legend: R = cache rows, Hkv = key/value heads, S = cache slots, D = head dim, L = tokens.
#pragma once

#include <mutex>

#include "core/model.h"

namespace octo {

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
