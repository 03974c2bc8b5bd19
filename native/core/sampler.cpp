#include "core/sampler.h"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <stdexcept>

// CUDA graphs: compiled in when CMakeLists.txt's probe of libtorch's graph API succeeded
// (OCTO_CUDA_GRAPHS, a CUDA libtorch 2.x only).
#if defined(OCTO_CUDA_GRAPHS) && OCTO_CUDA_GRAPHS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <atomic>
#include <cstdio>
#include <mutex>
#else
#undef OCTO_CUDA_GRAPHS
#define OCTO_CUDA_GRAPHS 0
#endif

namespace octo {

const char* finishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kRunning: break;
  }
  return "running";
}

at::Tensor filterLogits(const at::Tensor& logits, const SamplingParams& params) {
  const float minusInf = -std::numeric_limits<float>::infinity();
  at::Tensor scaled = logits / (params.temperature > 0 ? params.temperature : 1.0);  // [B, V]
  const int64_t V = scaled.size(-1);
  if (params.topK > 0 && params.topK < V) {
    at::Tensor kth = std::get<0>(scaled.topk(params.topK, -1)).narrow(-1, params.topK - 1, 1);  // [B, 1]
    scaled = scaled.masked_fill(scaled < kth, minusInf);
  }
  if (params.topP < 1.0) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    at::Tensor sortedProbs = at::softmax(sorted, -1);
    // Drop a token when the mass before it already reaches top_p; the first token always stays.
    at::Tensor drop = (sortedProbs.cumsum(-1) - sortedProbs) >= params.topP;
    scaled = scaled.masked_fill(at::zeros_like(drop).scatter(-1, order, drop), minusInf);
  }
  if (params.minP > 0) {
    // Ratios to the top token do not change when the survivors are renormalised, so this is
    // min-p of the temperature-scaled distribution, whatever ran before.
    at::Tensor probs = at::softmax(scaled, -1);
    at::Tensor floor = std::get<0>(probs.max(-1, /*keepdim=*/true)) * params.minP;
    scaled = scaled.masked_fill(probs < floor, minusInf);
  }
  return scaled;
}

at::Tensor sampleTokens(const at::Tensor& logits, const SamplingParams& params, const at::Tensor& uniforms) {
  if (params.temperature <= 0) return logits.argmax(-1);
  at::Tensor probs = at::softmax(filterLogits(logits, params), -1);  // [B, V]
  at::Tensor cdf = probs.cumsum(-1);
  at::Tensor target = uniforms.to(cdf.device(), cdf.scalar_type()).unsqueeze(-1) * cdf.narrow(-1, cdf.size(-1) - 1, 1);
  // First token whose cdf exceeds the target: filtered tokens add no mass, so they are never hit.
  at::Tensor token = at::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(-1);
  return token.clamp_max(cdf.size(-1) - 1);
}

namespace {

constexpr int64_t kLow32 = static_cast<int64_t>(0xFFFFFFFFLL);

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A 32-bit integer hash with full avalanche (multiplier 0x45d9f3b). Values are kept below 2^32
// in int64 and the multiplier below 2^27, so no product overflows and shifts are logical.
at::Tensor mix32(at::Tensor x) {
  x = x.__rshift__(16).bitwise_xor(x).mul(static_cast<int64_t>(0x45d9f3b)).bitwise_and(kLow32);
  x = x.__rshift__(16).bitwise_xor(x).mul(static_cast<int64_t>(0x45d9f3b)).bitwise_and(kLow32);
  return x.__rshift__(16).bitwise_xor(x);
}

}  // namespace

uint64_t sampleStreamKey(uint64_t seed, int64_t sample) {
  return splitmix64(splitmix64(seed) + static_cast<uint64_t>(sample));
}

at::Tensor counterUniforms(const at::Tensor& streamKeys, const at::Tensor& step) {
  at::Tensor low = streamKeys.select(1, 0), high = streamKeys.select(1, 1);  // [R]
  // A Weyl sequence over the draw number, hashed, keyed again and hashed: counter-based, like Philox.
  at::Tensor counter = (low + step * static_cast<int64_t>(0x9E3779B9LL)).bitwise_and(kLow32);
  at::Tensor bits = mix32(mix32(counter).bitwise_xor(high));
  return bits.__rshift__(8).to(at::kFloat) * (1.0 / 16777216.0);  // top 24 bits -> [0, 1)
}

namespace {

constexpr int64_t kPrefillAttentionBytes = 1LL << 28;   // what one prefill forward may materialise for attention
constexpr int64_t kCudaCheckInterval = 8;               // decode steps between host reads of the finish flags on CUDA
// The finish flag of a row whose logits were NaN or Inf. It never leaves the rollout: the host
// read of the flags that sees it fails the call (a FinishReason is what a finished sample returns).
constexpr int64_t kNonFiniteLogits = 255;

// Bytes one prefill forward of B rows, T new tokens and S keys materialises for attention:
// libtorch 1.13's manual attention the fp32 scores [B, H, T, S]; SDPA's fused kernels no scores,
// only the bool mask [B, 1, T, S] and the additive mask SDPA makes of it (at most 4 bytes).
int64_t prefillAttentionBytes(const ModelSpec& spec, int64_t B, int64_t T, int64_t S) {
  return OCTO_HAS_SDPA ? B * T * S * 5 : B * spec.numHeads * T * S * 4;
}

at::Tensor longTensor(const std::vector<int64_t>& values, at::Device device) {
  return at::tensor(values, at::kLong).to(device);
}

#if OCTO_CUDA_GRAPHS
// Replays one captured decode step. The step reads and writes only tensors that outlive the
// graph (the Rollout's decode buffers, the cache, KVCache::writeSlot) and no host state; it is
// captured once per batch size and re-captured after a compaction, every capture of a Rollout
// in one memory pool (a new graph is captured before the old one is dropped, so the pool's
// blocks carry over). OCTO_NATIVE_CUDA_GRAPHS=0 runs the same static-shape steps eagerly.
// Compiled against libtorch 2.13/2.14 headers; run only by scripts/gpu-check.sh on a GPU box.
std::atomic<bool> graphsFailed{false};  // a capture failed in this process: eager from then on

bool cudaGraphsEnabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("OCTO_NATIVE_CUDA_GRAPHS");
    return value == nullptr || std::string(value) != "0";
  }();
  return enabled && !graphsFailed.load();
}

class DecodeGraph {
 public:
  void invalidate() {
    if (graph_) retired_ = std::move(graph_);
  }

  // Replays (capturing first after a resize) and returns true; false when graphs are off
  // because this or an earlier capture failed: the caller then runs the step itself.
  bool step(at::Device device, const std::function<void()>& decodeStep) {
    if (graph_) {
      graph_->replay();
      return true;
    }
    if (!cudaGraphsEnabled()) return false;
    c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device.index());
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      // The first step after (re)sizing runs eagerly — lazy cuBLAS/allocator work must not
      // happen inside a capture (as torch.cuda.make_graphed_callables warms up) — and the capture
      // that follows records the next step without running it.
      decodeStep();
      side.synchronize();
      capture(device, side, decodeStep);
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(current);
    retired_.reset();
    return true;  // the warm-up ran this step; the graph, if captured, runs the next ones
  }

 private:
  // Thread-local capture mode: a CUDA call on another thread (another model's work) cannot
  // invalidate this capture; the mutex keeps two captures of this process from interleaving.
  void capture(at::Device device, c10::cuda::CUDAStream stream, const std::function<void()>& decodeStep) {
    static std::mutex captureMutex;
    std::lock_guard<std::mutex> lock(captureMutex);
    if (pool_.first == 0 && pool_.second == 0) pool_ = at::cuda::graph_pool_handle();
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    bool began = false;
    try {
      graph->capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
      began = true;
      decodeStep();
      graph->capture_end();
      graph_ = std::move(graph);
    } catch (const std::exception& error) {
      abandonCapture(device, stream, began);
      graph.reset();
      graphsFailed = true;
      std::string message = error.what();
      message = message.substr(0, message.find('\n'));
      std::fprintf(stderr, "octo-native: warning: CUDA graph capture of the decode step failed (%s); decoding without "
                   "CUDA graphs for the rest of this process\n", message.c_str());
    }
  }

  // After an exception inside a capture: end the stream's capture (whatever it recorded is
  // dropped) and stop routing this stream's allocations to the graph's pool, as capture_end()
  // would have, so the allocator and the stream are usable again.
  void abandonCapture(at::Device device, c10::cuda::CUDAStream stream, bool began) {
    if (!began) return;
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;
      if (cudaStreamEndCapture(stream.stream(), &partial) == cudaSuccess && partial != nullptr) cudaGraphDestroy(partial);
    }
    (void)cudaGetLastError();  // the capture's error is reported above, not left for the next call
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(device.index(), pool_);
      c10::cuda::CUDACachingAllocator::releasePool(device.index(), pool_);  // balances capture_begin's use of it
    } catch (const std::exception&) {
      // capture_end() got as far as ending the pool's routing itself
    }
  }

  std::unique_ptr<at::cuda::CUDAGraph> graph_, retired_;
  at::cuda::MempoolId_t pool_{0, 0};
};
#endif

// One generate call. Rows are samples, request-major: request i's samples are contiguous.
class Rollout {
 public:
  Rollout(const DecoderModel& model, const std::vector<GenerationRequest>& requests, const SamplingParams& params,
          const GenerationOptions& options)
      : model_(model), requests_(requests), params_(params), options_(options), device_(model.device()) {
    output_.samples.resize(requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      firstRow_.push_back(static_cast<int64_t>(rowRequest_.size()));
      output_.samples[i].resize(requests[i].samples);
      for (int64_t j = 0; j < requests[i].samples; ++j) {
        rowRequest_.push_back(static_cast<int64_t>(i));
        rowSample_.push_back(j);
      }
      output_.stats.promptTokens += static_cast<int64_t>(requests[i].promptIds.size());
    }
    temperature_ = params.temperature > 0 ? params.temperature : 1.0;
    if (!params.eosTokenIds.empty()) eosIds_ = longTensor(params.eosTokenIds, device_);  // [E]
    stopWidth_ = 0;
    for (const auto& s : params.stopSequences) stopWidth_ = std::max(stopWidth_, static_cast<int64_t>(s.size()));
    if (stopWidth_ > 0) {
      // Right-aligned, so that the last column of each is the newest token; padding matches anything.
      const int64_t S = static_cast<int64_t>(params.stopSequences.size());
      std::vector<int64_t> ids(S * stopWidth_, 0), pad(S * stopWidth_, 1);
      for (int64_t s = 0; s < S; ++s) {
        const auto& seq = params.stopSequences[s];
        const int64_t offset = stopWidth_ - static_cast<int64_t>(seq.size());
        for (size_t t = 0; t < seq.size(); ++t) {
          ids[s * stopWidth_ + offset + t] = seq[t];
          pad[s * stopWidth_ + offset + t] = 0;
        }
      }
      stopIds_ = longTensor(ids, device_).view({S, stopWidth_});              // [S, W]
      stopPadding_ = longTensor(pad, device_).view({S, stopWidth_}).ne(0);  // [S, W]
    }
  }

  GenerationOutput run() {
    const int64_t N = params_.maxNewTokens;
    at::Tensor firstLogits = options_.recompute ? at::Tensor() : prefill();  // [R, V]
    startDecode();
    if (options_.recompute) {
      runByRecompute();
    } else {
      record(firstLogits);
      firstLogits.reset();
      const int64_t checkInterval = device_.is_cuda() ? kCudaCheckInterval : 1;
      for (int64_t step = 1; step < N; ++step) {
        if (step % checkInterval == 0 && !checkFinished()) break;
        decodeStep();
        ++output_.stats.decodeSteps;
        output_.stats.decodeRowSteps += static_cast<int64_t>(live_.size());
      }
    }
    std::vector<int64_t> all(live_.size());
    std::iota(all.begin(), all.end(), 0);
    harvest(all);
    if (options_.prefixCache) options_.prefixCache->replace(std::move(keptSequences_));
    return std::move(output_);
  }

 private:
  // Prompts to prefill together: their longest reused prefix C and longest new part T, so
  // each row lays out as [padding | reused (C) | padding | new tokens (T)] and all end at C + T.
  struct PrefillChunk {
    std::vector<int64_t> requests;
    int64_t reused = 0, fresh = 0;
    int64_t slots() const { return reused + fresh; }
  };

  // Runs every prompt once, copies its cache rows to its samples, returns their next-token logits.
  at::Tensor prefill() {
    const int64_t numRequests = static_cast<int64_t>(requests_.size());
    matches_.resize(numRequests);
    reused_.assign(numRequests, 0);
    for (int64_t i = 0; i < numRequests; ++i) {
      if (!options_.prefixCache) break;
      matches_[i] = options_.prefixCache->longestPrefix(requests_[i].promptIds);
      // At least the last prompt token is run again: its logits give the first new token.
      reused_[i] = std::min(matches_[i].length, static_cast<int64_t>(requests_[i].promptIds.size()) - 1);
      output_.stats.reusedPromptTokens += reused_[i];
    }
    auto freshTokens = [&](int64_t i) { return static_cast<int64_t>(requests_[i].promptIds.size()) - reused_[i]; };

    // Longest first, so prompts of similar length share a chunk and padding stays small.
    std::vector<int64_t> order(numRequests);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return freshTokens(a) > freshTokens(b); });
    std::vector<PrefillChunk> chunks;
    for (int64_t i : order) {
      if (!chunks.empty()) {
        PrefillChunk& c = chunks.back();
        const int64_t rows = static_cast<int64_t>(c.requests.size()) + 1, T = std::max(c.fresh, freshTokens(i));
        const int64_t S = std::max(c.reused, reused_[i]) + T;
        if (rows * T <= options_.prefillChunkTokens &&
            prefillAttentionBytes(model_.spec(), rows, T, S) <= kPrefillAttentionBytes) {
          c.requests.push_back(i);
          c.fresh = T;
          c.reused = S - T;
          continue;
        }
      }
      chunks.push_back({{i}, reused_[i], freshTokens(i)});
    }
    promptSlots_ = 0;
    for (const auto& c : chunks) promptSlots_ = std::max(promptSlots_, c.slots());

    const int64_t R = static_cast<int64_t>(rowRequest_.size());
    // Slots: every prompt ends at promptSlots_, then one per fed token (the last sampled one never is).
    cache_ = newCache(model_, R, promptSlots_ + params_.maxNewTokens - 1);
    at::Tensor firstLogits = at::empty({R, model_.spec().vocabSize}, at::TensorOptions().device(device_).dtype(at::kFloat));
    for (const auto& chunk : chunks) prefillChunk(chunk, firstLogits);
    cache_.length = promptSlots_;
    return firstLogits;
  }

  void prefillChunk(const PrefillChunk& chunk, at::Tensor& firstLogits) {
    const int64_t B = static_cast<int64_t>(chunk.requests.size()), reusedWidth = chunk.reused, T = chunk.fresh;
    KVCache chunkCache = newCache(model_, B, chunk.slots());
    std::vector<int64_t> ids(B * T, 0), positions(B * T, 0), valid(B * T, 0), from, to;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = chunk.requests[b], reused = reused_[i];
      const auto& prompt = requests_[i].promptIds;
      const int64_t fresh = static_cast<int64_t>(prompt.size()) - reused, pad = T - fresh;
      if (reused > 0) {
        const CachedSequence& source = *matches_[i].sequence;
        at::Tensor sourceSlots = source.slots.narrow(0, 0, reused);  // [reused]
        const int64_t first = reusedWidth - reused;
        for (size_t l = 0; l < chunkCache.keys.size(); ++l) {
          chunkCache.keys[l][b].narrow(1, first, reused).copy_(source.rows->keys[l][source.row].index_select(1, sourceSlots));
          chunkCache.values[l][b].narrow(1, first, reused).copy_(source.rows->values[l][source.row].index_select(1, sourceSlots));
        }
        chunkCache.keyValid[b].narrow(0, first, reused).fill_(true);
      }
      for (int64_t t = 0; t < fresh; ++t) {
        ids[b * T + pad + t] = prompt[reused + t];
        positions[b * T + pad + t] = reused + t;
        valid[b * T + pad + t] = 1;
      }
      for (int64_t j = 0; j < requests_[i].samples; ++j) {
        from.push_back(b);
        to.push_back(firstRow_[i] + j);
      }
    }
    chunkCache.length = reusedWidth;
    at::Tensor inputIds = longTensor(ids, device_).view({B, T}), inputPositions = longTensor(positions, device_).view({B, T});
    at::Tensor inputValid = longTensor(valid, device_).view({B, T}).ne(0);
    // A prompt too long for one forward goes through in slices of time, appended to the cache
    // like decode steps: same result, activations bounded (a single row cannot be split otherwise).
    const int64_t slice = std::max<int64_t>(
        1, std::min({T, options_.prefillChunkTokens / B,
                     kPrefillAttentionBytes / prefillAttentionBytes(model_.spec(), B, 1, chunk.slots())}));
    at::Tensor hidden;  // [B, slice, hidden]
    for (int64_t start = 0; start < T; start += slice) {
      const int64_t width = std::min(slice, T - start);
      hidden = model_.hiddenStates(inputIds.narrow(1, start, width).contiguous(), inputPositions.narrow(1, start, width).contiguous(),
                                   &chunkCache, inputValid.narrow(1, start, width).contiguous());
    }
    at::Tensor lastLogits = model_.logits(hidden.select(1, hidden.size(1) - 1));  // [B, V]
    at::Tensor fromRows = longTensor(from, device_), toRows = longTensor(to, device_);
    copyRows(chunkCache, fromRows, cache_, toRows, promptSlots_ - chunk.slots());
    firstLogits.index_copy_(0, toRows, lastLogits.index_select(0, fromRows));
    output_.stats.prefillSlots += B * T;
    ++output_.stats.prefillChunks;
  }

  // Per-row decode state on the device; R = rows in the batch.
  void startDecode() {
    const int64_t R = static_cast<int64_t>(rowRequest_.size()), N = params_.maxNewTokens;
    const auto longs = at::TensorOptions().device(device_).dtype(at::kLong);
    std::vector<int64_t> keys, positions;
    for (int64_t r = 0; r < R; ++r) {
      const GenerationRequest& request = requests_[rowRequest_[r]];
      const uint64_t key = sampleStreamKey(request.seed, rowSample_[r]);
      keys.push_back(static_cast<int64_t>(key & 0xFFFFFFFFULL));
      keys.push_back(static_cast<int64_t>(key >> 32));
      positions.push_back(static_cast<int64_t>(request.promptIds.size()) - 1);  // advanced by record()
    }
    streamKeys_ = longTensor(keys, device_).view({R, 2});   // [R, 2]
    positions_ = longTensor(positions, device_).view({R, 1});  // [R, 1]: position of the token fed next
    nextTokens_ = at::zeros({R, 1}, longs);                  // [R, 1]
    step_ = at::zeros({1}, longs);                           // [1]: column of the token sampled next
    tokens_ = at::zeros({R, N}, longs);                      // [R, N]
    logprobs_ = at::zeros({R, N}, longs.dtype(at::kFloat));  // [R, N]
    generated_ = at::zeros({R}, longs);                      // [R]: tokens up to and including the finishing one
    finish_ = at::zeros({R}, longs);                         // [R]: FinishReason, 0 while running
    if (stopWidth_ > 0) recentTokens_ = at::full({R, stopWidth_}, -1, longs);  // [R, W]
    live_.resize(R);
    std::iota(live_.begin(), live_.end(), 0);
    slotsUsed_ = promptSlots_;
    if (options_.staticShapes && !options_.recompute) cache_.writeSlot = at::full({1}, promptSlots_, longs);
  }

  // Samples the next token of every row from `logits` [R, V] and records it. Device work only
  // (no host reads), so that on CUDA it is captured in the decode graph.
  void record(const at::Tensor& logits) {
    at::Tensor uniforms = params_.temperature > 0 ? counterUniforms(streamKeys_, step_) : at::Tensor();  // [R]
    at::Tensor token = sampleTokens(logits, params_, uniforms);                                           // [R]
    at::Tensor logprob = at::log_softmax(logits / temperature_, -1).gather(1, token.unsqueeze(1));         // [R, 1]
    tokens_.index_copy_(1, step_, token.unsqueeze(1));
    logprobs_.index_copy_(1, step_, logprob);
    at::Tensor running = finish_.eq(0);  // [R]
    generated_.add_(running.to(at::kLong));
    at::Tensor isEos = eosIds_.defined() ? token.unsqueeze(1).eq(eosIds_).any(1) : at::zeros_like(running);
    finish_.masked_fill_(running.logical_and(isEos), static_cast<int64_t>(FinishReason::kEos));
    if (stopWidth_ > 0) {
      recentTokens_.copy_(at::cat({recentTokens_.narrow(1, 1, stopWidth_ - 1), token.unsqueeze(1)}, 1));
      at::Tensor isStop = recentTokens_.unsqueeze(1).eq(stopIds_.unsqueeze(0)).logical_or(stopPadding_.unsqueeze(0))
                              .all(2).any(1);  // [R]
      finish_.masked_fill_(running.logical_and(isStop).logical_and(isEos.logical_not()),
                           static_cast<int64_t>(FinishReason::kStop));
    }
    // NaN or +Inf logits (or all -Inf) give a NaN or -Inf log-prob, whatever token was drawn: the
    // row stops, and the next host read of the flags fails the call. No sync here.
    finish_.masked_fill_(running.logical_and(logprob.squeeze(1).isfinite().logical_not()), kNonFiniteLogits);
    nextTokens_.copy_(token.unsqueeze(1));
    positions_.add_(1);
    step_.add_(1);
  }

  // One token per row through the cached model, then record().
  void decodeStep() {
    auto step = [this] {
      // Finished rows write their slot as padding, so what is kept for the prefix cache is exact.
      at::Tensor valid = finish_.eq(0).unsqueeze(1);                                  // [R, 1]
      at::Tensor hidden = model_.hiddenStates(nextTokens_, positions_, &cache_, valid);  // [R, 1, C]
      record(model_.logits(hidden.squeeze(1)));                                         // [R, V]
      if (cache_.writeSlot.defined()) cache_.writeSlot.add_(1);
    };
#if OCTO_CUDA_GRAPHS
    if (device_.is_cuda() && cache_.writeSlot.defined() && graph_.step(device_, step)) {
      ++slotsUsed_;
      return;
    }
#endif
    step();
    ++slotsUsed_;
  }

  // Reads the finish flags (a host sync): false when no row runs; drops finished rows from the
  // batch once fewer than 3/4 of its rows run — the copy costs about one step's cache reads.
  bool checkFinished() {
    at::Tensor finish = finish_.to(at::kCPU);
    const int64_t* flags = finish.data_ptr<int64_t>();
    std::vector<int64_t> running, finished;
    for (int64_t r = 0; r < finish.size(0); ++r) {
      if (flags[r] == kNonFiniteLogits) failOnNonFiniteLogits(r);
      (flags[r] == 0 ? running : finished).push_back(r);
    }
    if (running.empty()) return false;
    if (4 * running.size() < 3 * live_.size()) compact(running, finished);
    return true;
  }

  // Batch row `r` stopped on NaN/Inf logits: no sample of this call can be trusted.
  [[noreturn]] void failOnNonFiniteLogits(int64_t r) const {
    const int64_t row = live_[r], token = generated_[r].item<int64_t>() - 1;
    throw std::runtime_error(
        "generate: the model's logits are NaN or Inf for request " + std::to_string(rowRequest_[row]) + " (sample " +
        std::to_string(rowSample_[row]) + ") at generated token " + std::to_string(token) +
        ": the model's weights or its inputs produce non-finite values, so no token can be sampled. Check the weights "
        "(Model.load warns about NaN/Inf ones); a training run with a learning rate far too large leaves weights like these");
  }

  void compact(const std::vector<int64_t>& running, const std::vector<int64_t>& finished) {
    harvest(finished);
    at::Tensor keep = longTensor(running, device_);
    cache_ = selectRows(cache_, keep);
    for (at::Tensor* t : {&streamKeys_, &positions_, &nextTokens_, &tokens_, &logprobs_, &generated_, &finish_})
      *t = t->index_select(0, keep);
    if (recentTokens_.defined()) recentTokens_ = recentTokens_.index_select(0, keep);
    std::vector<int64_t> live;
    for (int64_t r : running) live.push_back(live_[r]);
    live_ = std::move(live);
    ++output_.stats.compactions;
#if OCTO_CUDA_GRAPHS
    graph_.invalidate();  // its buffers were the old tensors
#endif
  }

  // Copies the results of batch rows `local` to the host (and their keys/values to the
  // prefix cache when one was given).
  void harvest(const std::vector<int64_t>& local) {
    if (local.empty()) return;
    at::Tensor index = longTensor(local, device_);
    at::Tensor tokens = tokens_.index_select(0, index).to(at::kCPU), logprobs = logprobs_.index_select(0, index).to(at::kCPU);
    at::Tensor generated = generated_.index_select(0, index).to(at::kCPU), finish = finish_.index_select(0, index).to(at::kCPU);
    std::shared_ptr<CachedRows> kept;
    at::Tensor keptSlots;                // [Σ valid] slot of each valid (row, slot), row-major
    std::vector<int64_t> keptOffsets;    // where each row's slots start in keptSlots
    if (options_.prefixCache) {
      kept = std::make_shared<CachedRows>();
      for (size_t l = 0; l < cache_.keys.size(); ++l) {
        kept->keys.push_back(cache_.keys[l].narrow(2, 0, slotsUsed_).index_select(0, index));  // [r, Hkv, slots, D]
        kept->values.push_back(cache_.values[l].narrow(2, 0, slotsUsed_).index_select(0, index));
      }
      // One nonzero and one small host copy for all rows (not a host sync per row).
      at::Tensor keptValid = cache_.keyValid.narrow(1, 0, slotsUsed_).index_select(0, index);  // [r, slots]
      keptSlots = keptValid.nonzero().select(1, 1);
      const at::Tensor counts = keptValid.sum(1).to(at::kCPU);
      keptOffsets.push_back(0);
      for (int64_t k = 0; k < counts.size(0); ++k) keptOffsets.push_back(keptOffsets.back() + counts[k].item<int64_t>());
    }
    for (size_t k = 0; k < local.size(); ++k) {
      if (finish[k].item<int64_t>() == kNonFiniteLogits) failOnNonFiniteLogits(local[k]);
      const int64_t row = live_[local[k]], length = generated[k].item<int64_t>();
      SampleResult& result = output_.samples[rowRequest_[row]][rowSample_[row]];
      const int64_t* ids = tokens[k].data_ptr<int64_t>();
      const float* lps = logprobs[k].data_ptr<float>();
      result.tokens.assign(ids, ids + length);
      result.logprobs.assign(lps, lps + length);
      const int64_t reason = finish[k].item<int64_t>();
      result.finishReason = reason == 0 ? FinishReason::kLength : static_cast<FinishReason>(reason);
      output_.stats.generatedTokens += length;
      if (kept) {
        auto sequence = std::make_shared<CachedSequence>();
        sequence->tokens = requests_[rowRequest_[row]].promptIds;
        sequence->tokens.insert(sequence->tokens.end(), result.tokens.begin(), result.tokens.end() - 1);  // the last was never fed
        sequence->rows = kept;
        sequence->row = static_cast<int64_t>(k);
        sequence->slots = keptSlots.narrow(0, keptOffsets[k], keptOffsets[k + 1] - keptOffsets[k]);  // [L]
        TORCH_CHECK(sequence->slots.size(0) == static_cast<int64_t>(sequence->tokens.size()), "internal: sample row holds ",
                    sequence->slots.size(0), " valid slots for ", sequence->tokens.size(), " tokens");
        keptSequences_.push_back(std::move(sequence));
      }
    }
  }

  // The no-cache reference: every step runs the whole sequence (prompt + tokens so far).
  void runByRecompute() {
    const int64_t R = static_cast<int64_t>(rowRequest_.size());
    int64_t P = 0;
    for (const auto& r : requests_) P = std::max(P, static_cast<int64_t>(r.promptIds.size()));
    std::vector<int64_t> ids(R * P, 0), positions(R * P, 0), valid(R * P, 0), lengths;
    for (int64_t r = 0; r < R; ++r) {
      const auto& prompt = requests_[rowRequest_[r]].promptIds;
      const int64_t L = static_cast<int64_t>(prompt.size());
      lengths.push_back(L);
      for (int64_t t = 0; t < L; ++t) {
        ids[r * P + P - L + t] = prompt[t];
        positions[r * P + P - L + t] = t;
        valid[r * P + P - L + t] = 1;
      }
    }
    at::Tensor promptIds = longTensor(ids, device_).view({R, P}), promptPositions = longTensor(positions, device_).view({R, P});
    at::Tensor promptValid = longTensor(valid, device_).view({R, P}).ne(0);
    at::Tensor promptLengths = longTensor(lengths, device_).unsqueeze(1);  // [R, 1]
    for (int64_t step = 0; step < params_.maxNewTokens; ++step) {
      if (step > 0 && !anyRunning()) break;
      at::Tensor steps = at::arange(step, promptIds.options()).unsqueeze(0);  // [1, step]
      at::Tensor input = at::cat({promptIds, tokens_.narrow(1, 0, step)}, 1);  // [R, P + step]
      at::Tensor inputPositions = at::cat({promptPositions, promptLengths + steps}, 1);
      at::Tensor inputValid = at::cat({promptValid, at::ones({R, step}, promptValid.options())}, 1);
      at::Tensor hidden = model_.hiddenStates(input, inputPositions, nullptr, inputValid);  // [R, P + step, C]
      record(model_.logits(hidden.select(1, P + step - 1)));
      ++output_.stats.decodeSteps;
      output_.stats.decodeRowSteps += R;
    }
  }

  bool anyRunning() const { return finish_.eq(0).any().item<bool>(); }

  const DecoderModel& model_;
  const std::vector<GenerationRequest>& requests_;
  const SamplingParams& params_;
  const GenerationOptions& options_;
  const at::Device device_;
  double temperature_ = 1.0;
  at::Tensor eosIds_, stopIds_, stopPadding_;
  int64_t stopWidth_ = 0;

  std::vector<int64_t> rowRequest_, rowSample_, firstRow_;  // per sample row / per request
  std::vector<PrefixCache::Match> matches_;
  std::vector<int64_t> reused_;
  int64_t promptSlots_ = 0, slotsUsed_ = 0;

  KVCache cache_;
  at::Tensor streamKeys_, positions_, nextTokens_, step_, tokens_, logprobs_, generated_, finish_, recentTokens_;
  std::vector<int64_t> live_;  // sample row of each batch row
#if OCTO_CUDA_GRAPHS
  DecodeGraph graph_;
#endif

  std::vector<std::shared_ptr<const CachedSequence>> keptSequences_;
  GenerationOutput output_;
};

}  // namespace

GenerationOutput generate(const DecoderModel& model, const std::vector<GenerationRequest>& requests,
                          const SamplingParams& params, const GenerationOptions& options) {
  c10::InferenceMode inference;
  const int64_t vocab = model.spec().vocabSize;
  TORCH_CHECK(params.maxNewTokens >= 1, "maxNewTokens must be at least 1, not ", params.maxNewTokens);
  TORCH_CHECK(!(options.recompute && options.prefixCache), "recompute runs without a KV cache, so it takes no prefix cache");
  TORCH_CHECK(options.prefillChunkTokens >= 1, "prefillChunkTokens must be at least 1");
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    TORCH_CHECK(!r.promptIds.empty(), "generation request ", i, " has an empty prompt");
    TORCH_CHECK(r.samples >= 1, "generation request ", i, " asks for ", r.samples, " samples; n must be at least 1");
    for (int64_t id : r.promptIds)
      TORCH_CHECK(id >= 0 && id < vocab, "prompt token id ", id, " is outside the model's vocabulary [0, ", vocab, ")");
  }
  for (const auto& s : params.stopSequences) {
    TORCH_CHECK(!s.empty(), "a stop sequence is empty");
    for (int64_t id : s) TORCH_CHECK(id >= 0 && id < vocab, "stop sequence token id ", id, " is outside the vocabulary");
  }
  if (requests.empty()) return {};
  Rollout rollout(model, requests, params, options);
  return rollout.run();
}

}  // namespace octo
