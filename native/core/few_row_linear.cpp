#include "core/few_row_linear.h"

#include <ATen/Parallel.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace octo {

namespace {

constexpr int kLanes = 16;  // independent partial sums: vectorisable without reassociating a sum

// out[m, n] = Σ_c x[m, c] w[n, c] for n in [begin, end), portable: the lanes vectorise to
// whatever the build targets. On x86-64 with AVX2 + FMA (checked at run time) dotRowsAvx2 below.
void dotRowsDefault(const float* x, int64_t rows, int64_t C, const float* w, int64_t begin, int64_t end, float* out,
                    int64_t N) {
  const int64_t blocked = C / kLanes * kLanes;
  for (int64_t n = begin; n < end; ++n) {
    const float* wn = w + n * C;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * C;
      float lanes[kLanes] = {};
      for (int64_t c = 0; c < blocked; c += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += xm[c + l] * wn[c + l];
      float sum = 0;
      for (int l = 0; l < kLanes; ++l) sum += lanes[l];
      for (int64_t c = blocked; c < C; ++c) sum += xm[c] * wn[c];
      out[m * N + n] = sum;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) inline float horizontalSum(__m256 v) {
  const __m128 pairs = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quads = _mm_add_ps(pairs, _mm_movehl_ps(pairs, pairs));
  return _mm_cvtss_f32(_mm_add_ss(quads, _mm_shuffle_ps(quads, quads, 1)));
}

// Four weight rows at a time against each input row: one load of x feeds four FMAs, and the four
// rows (4·C floats) stay in L1 across the input rows.
__attribute__((target("avx2,fma"))) void dotRowsAvx2(const float* x, int64_t rows, int64_t C, const float* w,
                                                     int64_t begin, int64_t end, float* out, int64_t N) {
  const int64_t blocked = C / 8 * 8;
  int64_t n = begin;
  for (; n + 4 <= end; n += 4) {
    const float *w0 = w + n * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * C;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t c = 0; c < blocked; c += 8) {
        const __m256 xv = _mm256_loadu_ps(xm + c);
        a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + c), a0);
        a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + c), a1);
        a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + c), a2);
        a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + c), a3);
      }
      float s0 = horizontalSum(a0), s1 = horizontalSum(a1), s2 = horizontalSum(a2), s3 = horizontalSum(a3);
      for (int64_t c = blocked; c < C; ++c) {
        s0 += xm[c] * w0[c];
        s1 += xm[c] * w1[c];
        s2 += xm[c] * w2[c];
        s3 += xm[c] * w3[c];
      }
      float* o = out + m * N + n;
      o[0] = s0, o[1] = s1, o[2] = s2, o[3] = s3;
    }
  }
  for (; n < end; ++n) {
    const float* wn = w + n * C;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * C;
      __m256 a = _mm256_setzero_ps();
      for (int64_t c = 0; c < blocked; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(xm + c), _mm256_loadu_ps(wn + c), a);
      float sum = horizontalSum(a);
      for (int64_t c = blocked; c < C; ++c) sum += xm[c] * wn[c];
      out[m * N + n] = sum;
    }
  }
}
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

}  // namespace

bool fewRowLinearApplies(const at::Tensor& x, const at::Tensor& weight) {
  if (!x.is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat || x.dim() < 1) return false;
  if (at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  const int64_t C = x.size(-1);
  return C > 0 && x.numel() / C <= kFewRows && weight.dim() == 2 && weight.size(1) == C && weight.is_contiguous();
}

at::Tensor fewRowLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t C = x.size(-1), N = weight.size(0), rows = x.numel() / C;
  const at::Tensor input = x.contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = N;
  at::Tensor out = at::empty(shape, x.options());
  const float* xs = input.data_ptr<float>();
  const float* ws = weight.data_ptr<float>();
  float* os = out.data_ptr<float>();
  auto kernel = dotRowsDefault;
#if defined(__x86_64__) && defined(__GNUC__)
  if (kHasAvx2) kernel = dotRowsAvx2;
#endif
  // Grains of weight rows: ~64 KiB of weights per task.
  const int64_t grain = std::max<int64_t>(1, (int64_t{16} << 10) / C);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { kernel(xs, rows, C, ws, begin, end, os, N); });
  if (bias.defined()) out.add_(bias);
  return out;
}

}  // namespace octo
