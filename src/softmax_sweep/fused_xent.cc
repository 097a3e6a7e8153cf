// Softmax cross-entropy of K stacked models in one pass over their logits, as an MXNet extension
// library (softmax_sweep/fused.py builds and loads it). MXNet's own operators take a pass each
// (log_softmax, pick, argmax, softmax, one_hot, the sums) at several ns per element over 10 classes.
//
// stacked_xent(logits (N, K*C), labels (N)) -> loss (K), correct (K): per model the summed
//   cross-entropy and the number of rows whose first largest logit is the label.
// stacked_xent_grad(logits, labels, scale (K)) -> grad (N, K*C), loss (K), correct (K), bias_grad (K*C):
//   grad = (softmax - one_hot(label)) * scale of the row's model; bias_grad its sum over rows.
// stacked_xent_parts(logits, labels, part (N, K)) -> loss (P, K), correct (P, K): as stacked_xent,
//   summed apart over the rows of each part 1..P (attribute parts) of each model; part 0: left out.
//
// Each model's numbers come from the same code on its own C logits, row after row, whatever K is:
// a model stacked gets what it gets alone, float for float. Sums are kept in double. The models are
// shared out among the threads MXNet gives operators (omp_get_max_threads, as MXSetNumOMPThreads
// set it), each model whole to one thread: the thread count changes no model's numbers. Each thread
// sums into memory of its own (sums of neighbouring models written by two threads: 16 models at
// batch 256 took 177 us on 2 threads, 133 apart; 236 on one).
#include <omp.h>
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
using Attrs = std::unordered_map<std::string, std::string>;
constexpr unsigned kMaxClasses = 1024;

static int models_of(const Attrs& attrs) { return std::stoi(attrs.at("models")); }

// Below this many rows x models a parallel region costs more than it saves (a small training step).
constexpr long kParallelWork = 4096;

// Calls body(first, end) for the models of each thread's share, on every thread MXNet allows.
template <typename Body>
static void by_models(int K, int N, Body body) {
  const int threads = static_cast<long>(K) * N >= kParallelWork ? std::min(K, omp_get_max_threads()) : 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    body(static_cast<int>(static_cast<long>(K) * t / T), static_cast<int>(static_cast<long>(K) * (t + 1) / T));
  }
}

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

static bool exp_is_glibcs() {
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

// For tests: how many floats first, first + stride, ... up to last get another exp here than from
// expf; -1 where expf itself is used.
extern "C" long softmax_sweep_exp_mismatches(uint32_t first, uint32_t last, uint32_t stride) {
#if defined(__x86_64__)
  if (exp_is_glibcs()) return vector_exp::mismatches(first, last, stride);
#endif
  return -1;
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

// For each row n, models first..end-1 of it: their exps together, then finish(n, m, e, arg, at_label) for each.
template <typename Finish>
static void rows(const float* logits, const std::vector<int>& label, int N, int K, int C, int first, int end,
                 Finish finish) {
  const int mine = end - first;
  std::vector<float> e(static_cast<size_t>(mine) * C), at_label(mine);
  std::vector<int> arg(mine);
  for (int n = 0; n < N; ++n) {
    const float* row = logits + static_cast<size_t>(n) * K * C + static_cast<size_t>(first) * C;
    for (int m = 0; m < mine; ++m)
      arg[m] = shifted_row(row + static_cast<size_t>(m) * C, C, label[n], &e[static_cast<size_t>(m) * C], &at_label[m]);
    exps(e.data(), e.size());
    for (int m = 0; m < mine; ++m) finish(n, first + m, &e[static_cast<size_t>(m) * C], arg[m], at_label[m]);
  }
}

static MXReturnValue run(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out, bool with_grad) {
  const int K = models_of(attrs);
  const int N = static_cast<int>((*in)[0].shape[0]);
  const int C = static_cast<int>((*in)[0].shape[1]) / K;
  const float* logits = (*in)[0].data<float>();
  const float* labels = (*in)[1].data<float>();
  const float* scale = with_grad ? (*in)[2].data<float>() : nullptr;
  float* grad = with_grad ? (*out)[0].data<float>() : nullptr;
  std::vector<int> label;
  if (!labels_of(labels, N, C, "stacked_xent", &label)) return MX_FAIL;
  std::vector<Sums> sums(K);
  std::vector<double> bias_grad(with_grad ? static_cast<size_t>(K) * C : 0, 0.0);
  by_models(K, N, [&](int first, int end) {
    std::vector<Sums> own(end - first);
    std::vector<double> own_bias(with_grad ? static_cast<size_t>(end - first) * C : 0, 0.0);
    rows(logits, label, N, K, C, first, end, [&](int n, int m, const float* e, int arg, float at_label) {
      const size_t at = static_cast<size_t>(n) * K * C + static_cast<size_t>(m) * C;
      finish_row(e, C, label[n], arg, at_label, with_grad ? scale[m] : 0.0f, with_grad ? grad + at : nullptr,
                 with_grad ? own_bias.data() + static_cast<size_t>(m - first) * C : nullptr, &own[m - first]);
    });
    std::copy(own.begin(), own.end(), sums.begin() + first);
    std::copy(own_bias.begin(), own_bias.end(), bias_grad.begin() + static_cast<size_t>(first) * C);
  });
  const int first = with_grad ? 1 : 0;
  float* loss = (*out)[first].data<float>();
  float* correct = (*out)[first + 1].data<float>();
  for (int m = 0; m < K; ++m) {
    loss[m] = static_cast<float>(sums[m].loss);
    correct[m] = sums[m].correct;
  }
  if (with_grad) {
    float* bias = (*out)[3].data<float>();
    for (size_t i = 0; i < bias_grad.size(); ++i) bias[i] = static_cast<float>(bias_grad[i]);
  }
  return MX_SUCCESS;
}

static MXReturnValue run_parts(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
  const int K = models_of(attrs);
  const int P = std::stoi(attrs.at("parts"));
  const int N = static_cast<int>((*in)[0].shape[0]);
  const int C = static_cast<int>((*in)[0].shape[1]) / K;
  const float* logits = (*in)[0].data<float>();
  const float* labels = (*in)[1].data<float>();
  const float* part = (*in)[2].data<float>();
  std::vector<int> label;
  if (!labels_of(labels, N, C, "stacked_xent_parts", &label)) return MX_FAIL;
  std::vector<Sums> sums(static_cast<size_t>(P) * K);
  by_models(K, N, [&](int first, int end) {
    const int mine = end - first;
    std::vector<Sums> own(static_cast<size_t>(P) * mine);
    rows(logits, label, N, K, C, first, end, [&](int n, int m, const float* e, int arg, float at_label) {
      const int p = static_cast<int>(part[static_cast<size_t>(n) * K + m]);
      if (p >= 1 && p <= P)
        finish_row(e, C, label[n], arg, at_label, 0.0f, nullptr, nullptr, &own[static_cast<size_t>(p - 1) * mine + m - first]);
    });
    for (int p = 0; p < P; ++p)
      std::copy(own.begin() + static_cast<size_t>(p) * mine, own.begin() + static_cast<size_t>(p + 1) * mine,
                sums.begin() + static_cast<size_t>(p) * K + first);
  });
  float* loss = (*out)[0].data<float>();
  float* correct = (*out)[1].data<float>();
  for (size_t i = 0; i < sums.size(); ++i) {
    loss[i] = static_cast<float>(sums[i].loss);
    correct[i] = sums[i].correct;
  }
  return MX_SUCCESS;
}

static MXReturnValue forward_parts(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                                   const OpResource&) {
  return run_parts(attrs, in, out);
}

static MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                             const OpResource&) {
  return run(attrs, in, out, false);
}

static MXReturnValue forward_grad(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                                  const OpResource&) {
  return run(attrs, in, out, true);
}

// Never called (nothing here is differentiated), but MXNet's CachedOp builds the backward graph
// of every graph: an operator without one is refused.
static MXReturnValue backward(const Attrs&, std::vector<MXTensor>*, std::vector<MXTensor>* out, const OpResource&) {
  for (MXTensor& grad : *out) {
    float* data = grad.data<float>();
    for (int64_t i = 0; i < grad.size(); ++i) data[i] = 0;
  }
  return MX_SUCCESS;
}

static MXReturnValue parse(const Attrs& attrs, int* num_in, int* num_out) {
  if (attrs.count("models") == 0 || std::stoi(attrs.at("models")) < 1) {
    MX_ERROR_MSG << "stacked_xent: models (a positive count) is required";
    return MX_FAIL;
  }
  *num_in = 2;
  *num_out = 2;
  return MX_SUCCESS;
}

static MXReturnValue parse_grad(const Attrs& attrs, int* num_in, int* num_out) {
  if (parse(attrs, num_in, num_out) != MX_SUCCESS) return MX_FAIL;
  *num_in = 3;
  *num_out = 4;
  return MX_SUCCESS;
}

static MXReturnValue parse_parts(const Attrs& attrs, int* num_in, int* num_out) {
  if (parse(attrs, num_in, num_out) != MX_SUCCESS) return MX_FAIL;
  if (attrs.count("parts") == 0 || std::stoi(attrs.at("parts")) < 1) {
    MX_ERROR_MSG << "stacked_xent_parts: parts (a positive count) is required";
    return MX_FAIL;
  }
  *num_in = 3;
  return MX_SUCCESS;
}

static MXReturnValue types(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  for (int t : *in)
    if (t != kFloat32) {
      MX_ERROR_MSG << "stacked_xent: float32 inputs only";
      return MX_FAIL;
    }
  for (int& t : *out) t = kFloat32;
  return MX_SUCCESS;
}

static bool shapes_fit(const Attrs& attrs, const std::vector<std::vector<unsigned int>>& in) {
  const unsigned K = models_of(attrs);
  return in[0].size() == 2 && in[1].size() == 1 && in[1][0] == in[0][0] && in[0][1] % K == 0 &&
         in[0][1] / K <= kMaxClasses &&
         (in.size() < 3 || (in[2].size() == 1 && in[2][0] == K));
}

static MXReturnValue shapes(const Attrs& attrs, const std::vector<std::vector<unsigned int>>& in,
                            std::vector<std::vector<unsigned int>>* out, bool with_grad) {
  if (!shapes_fit(attrs, in)) {
    MX_ERROR_MSG << "stacked_xent: logits (N, models * classes), labels (N), scale (models)";
    return MX_FAIL;
  }
  const unsigned K = models_of(attrs);
  if (with_grad)  // grad, loss, correct, bias_grad
    *out = {in[0], {K}, {K}, {in[0][1]}};
  else  // loss, correct
    *out = {{K}, {K}};
  return MX_SUCCESS;
}

static MXReturnValue shape_parts(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                                 std::vector<std::vector<unsigned int>>* out) {
  const unsigned K = models_of(attrs);
  const unsigned P = std::stoi(attrs.at("parts"));
  const auto& s = *in;
  if (!(s[0].size() == 2 && s[1].size() == 1 && s[1][0] == s[0][0] && s[0][1] % K == 0 &&
        s[0][1] / K <= kMaxClasses && s[2].size() == 2 && s[2][0] == s[0][0] && s[2][1] == K)) {
    MX_ERROR_MSG << "stacked_xent_parts: logits (N, models * classes), labels (N), part (N, models)";
    return MX_FAIL;
  }
  *out = {{P, K}, {P, K}};
  return MX_SUCCESS;
}

static MXReturnValue shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                           std::vector<std::vector<unsigned int>>* out) {
  return shapes(attrs, *in, out, false);
}

static MXReturnValue shape_grad(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                                std::vector<std::vector<unsigned int>>* out) {
  return shapes(attrs, *in, out, true);
}

REGISTER_OP(stacked_xent)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse)
    .setInferType(types)
    .setInferShape(shape);
REGISTER_OP(stacked_xent_grad)
    .setForward(forward_grad, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_grad)
    .setInferType(types)
    .setInferShape(shape_grad);
REGISTER_OP(stacked_xent_parts)
    .setForward(forward_parts, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_parts)
    .setInferType(types)
    .setInferShape(shape_parts);

MXReturnValue initialize(int version) { return version >= 10700 ? MX_SUCCESS : MX_FAIL; }
