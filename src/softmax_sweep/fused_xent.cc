// Softmax cross-entropy of K stacked models in one pass over their logits, as an MXNet extension
// library (softmax_sweep/fused.py builds and loads it). MXNet's own operators take a pass each
// (log_softmax, pick, argmax, the sums) at several ns per element over 10 classes.
//
// stacked_xent(logits (N, K*C), labels (N)) -> loss (K), correct (K): per model the summed
//   cross-entropy and the number of rows whose first largest logit is the label.
// stacked_xent_parts(logits, labels, part (N, K)) -> loss (P, K), correct (P, K): as stacked_xent,
//   summed apart over the rows of each part 1..P (attribute parts) of each model; part 0: left out.
//
// Each model's numbers come from the same code on its own C logits, row after row, whatever K is:
// a model stacked gets what it gets alone, float for float. Sums are kept in double. The models are
// shared out among the threads MXNet gives operators (omp_get_max_threads, as MXSetNumOMPThreads
// set it), each model whole to one thread: the thread count changes no model's numbers. Each thread
// sums into memory of its own (sums of neighbouring models written by two threads cost a third more).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"
#include "xent_rows.h"

using namespace mxnet::ext;
using Attrs = std::unordered_map<std::string, std::string>;
constexpr unsigned kMaxClasses = 1024;

static int models_of(const Attrs& attrs) { return std::stoi(attrs.at("models")); }

// Below this many rows x models a parallel region costs more than it saves (a small batch).
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

// For tests: how many floats first, first + stride, ... up to last get another exp here than from
// expf; -1 where expf itself is used.
extern "C" long softmax_sweep_exp_mismatches(uint32_t first, uint32_t last, uint32_t stride) {
#if defined(__x86_64__)
  if (exp_is_glibcs()) return vector_exp::mismatches(first, last, stride);
#endif
  return -1;
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

static MXReturnValue run(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
  const int K = models_of(attrs);
  const int N = static_cast<int>((*in)[0].shape[0]);
  const int C = static_cast<int>((*in)[0].shape[1]) / K;
  const float* logits = (*in)[0].data<float>();
  const float* labels = (*in)[1].data<float>();
  std::vector<int> label;
  if (!labels_of(labels, N, C, "stacked_xent", &label)) return MX_FAIL;
  std::vector<Sums> sums(K);
  by_models(K, N, [&](int first, int end) {
    std::vector<Sums> own(end - first);
    rows(logits, label, N, K, C, first, end, [&](int n, int m, const float* e, int arg, float at_label) {
      finish_row(e, C, label[n], arg, at_label, 0.0f, nullptr, nullptr, &own[m - first]);
    });
    std::copy(own.begin(), own.end(), sums.begin() + first);
  });
  float* loss = (*out)[0].data<float>();
  float* correct = (*out)[1].data<float>();
  for (int m = 0; m < K; ++m) {
    loss[m] = static_cast<float>(sums[m].loss);
    correct[m] = sums[m].correct;
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
  return run(attrs, in, out);
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

static MXReturnValue shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                           std::vector<std::vector<unsigned int>>* out) {
  const unsigned K = models_of(attrs);
  const auto& s = *in;
  if (!(s[0].size() == 2 && s[1].size() == 1 && s[1][0] == s[0][0] && s[0][1] % K == 0 && s[0][1] / K <= kMaxClasses)) {
    MX_ERROR_MSG << "stacked_xent: logits (N, models * classes), labels (N)";
    return MX_FAIL;
  }
  *out = {{K}, {K}};  // loss, correct
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

REGISTER_OP(stacked_xent)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse)
    .setInferType(types)
    .setInferShape(shape);
REGISTER_OP(stacked_xent_parts)
    .setForward(forward_parts, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_parts)
    .setInferType(types)
    .setInferShape(shape_parts);

MXReturnValue initialize(int version) { return version >= 10700 ? MX_SUCCESS : MX_FAIL; }
