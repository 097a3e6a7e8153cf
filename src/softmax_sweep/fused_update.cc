// The last operation of an SGD step, as an MXNet extension operator (softmax_sweep/fused.py builds
// and loads it with fused_xent.cc): the weight gradient comes out of its product transposed
// (model.weight_grad_columns: in that layout a stack's product is each model's own), and MXNet's
// transpose moves about 2.5 GB/s on a weight's shape. On a stack of 16 models at batch 256 the
// transpose and the subtraction took 188 us a step, this operator 42 (2 threads; 75 on one).
//
// minus_transposed(W (N, K), G (K, N)) -> W - G^T: each element W[n, k] - G[k, n], rounded once,
// the number elemwise_sub(W, transpose(G)) gives, float for float, on any thread count.
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;
using Attrs = std::unordered_map<std::string, std::string>;

constexpr long kParallelElements = 1L << 16;  // below: a parallel region costs more than it saves
constexpr long kRows = 16;                   // rows of W per block: G's reads a cache line each

static MXReturnValue minus_transposed(const Attrs&, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                                      const OpResource&) {
  const long N = (*in)[0].shape[0], K = (*in)[0].shape[1];
  const float* w = (*in)[0].data<float>();
  const float* g = (*in)[1].data<float>();
  float* result = (*out)[0].data<float>();
  const long blocks = (N + kRows - 1) / kRows;
  const int threads = N * K >= kParallelElements ? omp_get_max_threads() : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long block = 0; block < blocks; ++block) {
    const long first = block * kRows, end = std::min(N, first + kRows);
    for (long k = 0; k < K; ++k)
      for (long n = first; n < end; ++n) result[n * K + k] = w[n * K + k] - g[k * N + n];
  }
  return MX_SUCCESS;
}

// Never called (nothing here is differentiated), but MXNet's CachedOp builds the backward graph
// of every graph: an operator without one is refused.
static MXReturnValue no_backward(const Attrs&, std::vector<MXTensor>*, std::vector<MXTensor>* out,
                                 const OpResource&) {
  for (MXTensor& grad : *out) std::fill(grad.data<float>(), grad.data<float>() + grad.size(), 0.0f);
  return MX_SUCCESS;
}

static MXReturnValue parse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

static MXReturnValue types(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  if ((*in)[0] != kFloat32 || (*in)[1] != kFloat32) {
    MX_ERROR_MSG << "minus_transposed: float32 inputs only";
    return MX_FAIL;
  }
  *out = {kFloat32};
  return MX_SUCCESS;
}

static MXReturnValue shape(const Attrs&, std::vector<std::vector<unsigned int>>* in,
                           std::vector<std::vector<unsigned int>>* out) {
  const auto& s = *in;
  if (s[0].size() != 2 || s[1].size() != 2 || s[0][0] != s[1][1] || s[0][1] != s[1][0]) {
    MX_ERROR_MSG << "minus_transposed: W (N, K), G (K, N)";
    return MX_FAIL;
  }
  *out = {s[0]};
  return MX_SUCCESS;
}

REGISTER_OP(minus_transposed)
    .setForward(minus_transposed, "cpu")
    .setBackward(no_backward, "cpu")
    .setParseAttrs(parse)
    .setInferType(types)
    .setInferShape(shape);
