// What fused_xent.cc's operators and fused_epoch.cc's SGD epoch share: a row of one model's logits
// to its loss, whether it is right and its gradient, in the same code (and so the same numbers) in both.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

// Every row's label as a class index; false, with MXNet's error message, when one is none of the C.
static bool labels_of(const float* values, int N, int C, const char* op, std::vector<int>* labels) {
  labels->resize(N);
  for (int n = 0; n < N; ++n) {
    const int label = static_cast<int>(values[n]);
    if (label < 0 || label >= C) {
      MX_ERROR_MSG << op << ": label " << values[n] << " outside 0.." << C - 1;
      return false;
    }
    (*labels)[n] = label;
  }
  return true;
}

struct Sums {
  double loss = 0;
  float correct = 0;
};

// v[i] = exp(v[i]) for i < n, float for float what glibc's expf gives on a CPU with AVX2 and FMA,
// where glibc (2.28 and later) runs its __expf_fma (sysdeps/ieee754/flt-32/e_expf.c): its table and
// polynomial, its operations in its order, an fma where it has one (the library is built with
// -ffp-contract=off, so that no other operation becomes one); the constants are its __exp2f_data, read
// off glibc 2.36's libm. Four at a time instead of a call each (16 models at batch 256: 133 -> 88 us
// on 2 threads; all 2^32 floats checked against expf, tests/test_fused.py). Where |x| >= 88 or x is
// not a number: glibc's expf itself. Used where the CPU has AVX2 and FMA and a check against expf at
// load passes; elsewhere expf.
#if defined(__x86_64__)
namespace vector_exp {
constexpr uint64_t kTable[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
constexpr double kInvLn2N = 0x1.71547652b82fep+5;  // 32 / ln 2
constexpr double kShift = 0x1.8p+52;
constexpr double kPoly[3] = {0x1.c6af84b912394p-20, 0x1.ebfce50fac4f3p-13, 0x1.62e42ff0c52d6p-6};

__attribute__((target("avx2,fma"))) static inline void four(float* v) {
  const __m128 xf = _mm_loadu_ps(v);
  const __m256d xd = _mm256_cvtps_pd(xf);
  const __m256d inv = _mm256_set1_pd(kInvLn2N), shift = _mm256_set1_pd(kShift);
  __m256d kd = _mm256_fmadd_pd(inv, xd, shift);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shift);
  const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
  const __m256i t = _mm256_add_epi64(
      _mm256_i64gather_epi64(reinterpret_cast<const long long*>(kTable), _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8),
      _mm256_slli_epi64(ki, 47));
  const __m256d z = _mm256_fmadd_pd(r, _mm256_set1_pd(kPoly[0]), _mm256_set1_pd(kPoly[1]));
  const __m256d r2 = _mm256_mul_pd(r, r);
  __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(kPoly[2]), _mm256_set1_pd(1.0));
  y = _mm256_mul_pd(_mm256_fmadd_pd(z, r2, y), _mm256_castsi256_pd(t));
  // glibc's test for its special cases: the top 12 bits of |x| at or above those of 88
  const __m128i top = _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(xf), 20), _mm_set1_epi32(0x7ff));
  const int special = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(top, _mm_set1_epi32(0x42a))));
  float x[4];
  _mm_storeu_ps(x, xf);
  _mm_storeu_ps(v, _mm256_cvtpd_ps(y));
  if (special)
    for (int i = 0; i < 4; ++i)
      if (special & (1 << i)) v[i] = std::exp(x[i]);
}

__attribute__((target("avx2,fma"))) static void in_place(float* v, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) four(v + i);
  if (i < n) {
    float tail[4] = {0, 0, 0, 0};
    std::copy(v + i, v + n, tail);
    four(tail);
    std::copy(tail, tail + (n - i), v + i);
  }
}

// How many of the floats first, first + stride, ... up to last get another value from in_place than from expf.
static long mismatches(uint32_t first, uint32_t last, uint32_t stride) {
  long wrong = 0;
  std::vector<float> x, got;
  for (uint64_t bits = first; bits <= last; bits += stride) {
    const uint32_t b = static_cast<uint32_t>(bits);
    float value;
    std::memcpy(&value, &b, 4);
    x.push_back(value);
    if (x.size() == 4096 || bits + stride > last) {
      got = x;
      in_place(got.data(), got.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const float want = std::exp(x[i]);
        wrong += std::memcmp(&want, &got[i], 4) != 0;
      }
      x.clear();
    }
  }
  return wrong;
}

static bool checked() {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
  // every 4093rd float of each sign (with inf and a nan), and densely around 88 and -88..-112,
  // where expf's special cases begin
  return mismatches(0x00000000u, 0x7f800001u, 4093) == 0 && mismatches(0x80000000u, 0xff800001u, 4093) == 0 &&
         mismatches(0x42a00000u, 0x42c00000u, 7) == 0 && mismatches(0xc2a00000u, 0xc2e00000u, 7) == 0;
}
}  // namespace vector_exp

inline bool exp_is_glibcs() {  // inline: checked once in the library, not in each file
  static const bool yes = vector_exp::checked();
  return yes;
}
#endif

static void exps(float* v, size_t n) {
#if defined(__x86_64__)
  if (exp_is_glibcs()) return vector_exp::in_place(v, n);
#endif
  for (size_t i = 0; i < n; ++i) v[i] = std::exp(v[i]);  // another CPU, or a check that failed
}

// A row of one model up to its exp: s = x less its largest value, whose first class it returns,
// and s's value at the label. noinline (as finish_row): the compiler may not merge models into one
// vector, which would give a model's numbers another rounding in a stack than alone.
__attribute__((noinline)) static int shifted_row(const float* x, int C, int label, float* s, float* at_label) {
  float top = x[0];
  int arg = 0;
  for (int c = 1; c < C; ++c) {  // without a branch: which class is largest is a coin toss for the CPU
    const bool larger = x[c] > top;
    arg = larger ? c : arg;
    top = larger ? x[c] : top;
  }
  for (int c = 0; c < C; ++c) s[c] = x[c] - top;
  *at_label = s[label];
  return arg;
}

// The rest of the row from e = exp(s): its loss, whether it is right, and with grad its gradient.
__attribute__((noinline)) static void finish_row(const float* e, int C, int label, int arg, float at_label,
                                                 float scale, float* grad, double* bias_grad, Sums* sums) {
  float total = 0;
  for (int c = 0; c < C; ++c) total += e[c];
  sums->loss -= static_cast<double>(at_label - std::log(total));
  sums->correct += (arg == label);
  if (grad == nullptr) return;
  for (int c = 0; c < C; ++c) {
    grad[c] = (e[c] / total - (c == label ? 1.0f : 0.0f)) * scale;
    bias_grad[c] += grad[c];
  }
}
