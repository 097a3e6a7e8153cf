// A pass of minibatch SGD over an epoch's rows for K stacked softmax regression models, as one MXNet
// extension operator (softmax_sweep/fused.py builds and loads it with fused_xent.cc). A step of this
// model is small (batch 32 x 10 classes x 784 inputs: 250k multiply-adds a model), and MXNet spent
// its time on the dozen operators of a step, not on their arithmetic: 12 models at batch 32 took
// 420 us a step, 3 at batch 16 took 120 and one at batch 16 took 79, against 169, 20 and 11 here on
// one core of an AVX-512 Xeon (benchmarks/stacked.py (f) prints a pass both ways).
//
// sgd_epoch(X (N, D), labels (N), order (L, n) int64, lrs (S, K), decays (S, K), weight (K*C, D), bias (K*C))
//   -> weight, bias, loss (K), correct (K)
// Lane l's models (attribute lanes: how many models each lane has, in order) take rows
// order[l, s*B : (s+1)*B] of X at step s (B: attribute batch_size; the last step takes what is
// left). Each model steps as MXNet's sgd_update does with rescale_grad 1: lrs holds lr / B, decays
// lr * wd, per step and model; weight <- (1 - lr * wd) * weight - lr / B * sum over the rows of the
// loss gradient, the same for the bias. loss and correct are summed over the epoch, each row measured
// before its step, as fused_xent.cc's stacked_xent measures a row (the same code: xent_rows.h).
//
// A model's numbers come from the same code, in the same order, whatever else is in the stack and on
// any thread count: each model's logits are dot products summed in 16 running sums, then added up in
// one fixed tree; its gradient sums the rows in their order. The models are shared out among the
// threads MXNet gives operators, each model whole to one thread, for the whole pass (no barrier
// between steps).
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"
#include "xent_rows.h"

using Attrs = std::unordered_map<std::string, std::string>;

// Dot products and sums below may become fused multiply-adds (the rest of the library is built
// with -ffp-contract=off: glibc's expf, redone in xent_rows.h, must not gain any): they do in every
// model alike, alone or stacked.
#pragma GCC optimize("O3,fp-contract=fast")

namespace {

typedef float v16 __attribute__((vector_size(64)));
constexpr int kWidth = 16;
constexpr int kClasses = 5;   // classes of a model per block: 5 x (4 rows or 2 x 16 inputs) running sums
constexpr int kRows = 4;
constexpr int kInputs = 2;

inline v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
// v in every lane: one broadcast (v16{} + v is an addition first, since 0 + -0 is +0, three
// instructions in the gradient's innermost loop; v - 0 is v for every v)
inline v16 splat(float v) { return v - v16{}; }

// The 16 running sums of a dot product added up, always in this order.
// (halves by memcpy, which compilers turn into register moves: GCC before 12 lacks __builtin_shufflevector)
inline float total(v16 v) {
  typedef float v8 __attribute__((vector_size(32)));
  typedef float v4 __attribute__((vector_size(16)));
  v8 low, high;
  std::memcpy(&low, &v, sizeof low);
  std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof low, sizeof high);
  const v8 a = low + high;
  v4 a_low, a_high;
  std::memcpy(&a_low, &a, sizeof a_low);
  std::memcpy(&a_high, reinterpret_cast<const char*>(&a) + sizeof a_low, sizeof a_high);
  const v4 b = a_low + a_high;
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// out[r * kClasses + j] = row r of xs . w's row j, for R rows and kClasses rows of w (D inputs);
// meanwhile the next `coming` rows are fetched into the cache (a step's rows are anywhere in the
// data set: one model at batch 256 on 55,000 rows waited on memory, 189 -> 169 us a step).
template <int R>
void dots(const float* const* xs, const float* w, int D, float* out, const float* const* next, int coming) {
  v16 sums[R][kClasses] = {};
  int k = 0;
  for (; k + kWidth <= D; k += kWidth) {
    v16 x[R];
    for (int r = 0; r < coming; ++r) __builtin_prefetch(next[r] + k);
    for (int r = 0; r < R; ++r) x[r] = load(xs[r] + k);
    for (int j = 0; j < kClasses; ++j) {
      v16 wj = load(w + static_cast<long>(j) * D + k);
#ifdef __AVX512F__  // a 64-byte value fits one register only there
      __asm__("" : "+v"(wj));  // loaded once into a register, not again by each of the R multiply-adds
#endif
      for (int r = 0; r < R; ++r) sums[r][j] += x[r] * wj;
    }
  }
  for (; k < D; ++k)  // inputs past the last 16: each into the running sum it would be in
    for (int j = 0; j < kClasses; ++j)
      for (int r = 0; r < R; ++r) sums[r][j][k % kWidth] += xs[r][k] * w[static_cast<long>(j) * D + k];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < kClasses; ++j) out[r * kClasses + j] = total(sums[r][j]);
}

// One model's logits (B, C) on rows xs: its weight w (C, D), bias b. C is a multiple of kClasses
// (the weight is padded to one, see Model).
void logits(const float* const* xs, int B, const float* w, const float* b, int C, int D, float* z) {
  float block[kRows * kClasses];
  for (int c = 0; c < C; c += kClasses)
    for (int i = 0; i < B; i += kRows) {
      const int R = std::min(kRows, B - i);
      const float* wc = w + static_cast<long>(c) * D;
      const int coming = c == 0 ? std::min(kRows, B - i - R) : 0;  // later class blocks find them cached
      switch (R) {
        case 1: dots<1>(xs + i, wc, D, block, xs + i + R, coming); break;
        case 2: dots<2>(xs + i, wc, D, block, xs + i + R, coming); break;
        case 3: dots<3>(xs + i, wc, D, block, xs + i + R, coming); break;
        default: dots<kRows>(xs + i, wc, D, block, xs + i + R, coming);
      }
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < kClasses; ++j) z[(i + r) * C + c + j] = block[r * kClasses + j] + b[c + j];
    }
}

// w[c, k] <- w[c, k] * keep - sum over rows i, in order, of g[i, c] * xs[i][k], for kClasses
// classes from c and Q x 16 inputs from k.
template <int Q>
void step_block(const float* const* xs, int B, const float* g, int C, int c, int k, float keep, float* w, int D) {
  v16 sums[Q][kClasses] = {};
  for (int i = 0; i < B; ++i) {
    v16 x[Q];
    for (int q = 0; q < Q; ++q) x[q] = load(xs[i] + k + kWidth * q);
    for (int j = 0; j < kClasses; ++j) {
      const v16 gij = splat(g[i * C + c + j]);
      for (int q = 0; q < Q; ++q) sums[q][j] += gij * x[q];
    }
  }
  for (int j = 0; j < kClasses; ++j)
    for (int q = 0; q < Q; ++q) {
      float* p = w + static_cast<long>(c + j) * D + k + kWidth * q;
      store(p, load(p) * keep - sums[q][j]);
    }
}

void step_weight(const float* const* xs, int B, const float* g, float keep, int C, int D, float* w) {
  for (int c = 0; c < C; c += kClasses) {
    int k = 0;
    for (; k + kWidth * kInputs <= D; k += kWidth * kInputs) step_block<kInputs>(xs, B, g, C, c, k, keep, w, D);
    for (; k + kWidth <= D; k += kWidth) step_block<1>(xs, B, g, C, c, k, keep, w, D);
    for (; k < D; ++k)
      for (int j = 0; j < kClasses; ++j) {
        float sum = 0;
        for (int i = 0; i < B; ++i) sum += g[i * C + c + j] * xs[i][k];
        float* p = w + static_cast<long>(c + j) * D + k;
        *p = *p * keep - sum;
      }
  }
}

// A model's weight and bias with its classes padded to a multiple of kClasses (zeros, and labels
// never point there), and what a step needs of memory.
struct Model {
  int C, padded, D;
  std::vector<float> w, b, z, e, g;
  std::vector<double> bias_grad;
  Sums sums;

  Model(const float* weight, const float* bias, int C_, int D_, int B)
      : C(C_), padded((C_ + kClasses - 1) / kClasses * kClasses), D(D_),
        w(static_cast<size_t>(padded) * D_, 0.0f), b(padded, 0.0f), z(static_cast<size_t>(B) * padded),
        e(C_), g(static_cast<size_t>(B) * padded, 0.0f), bias_grad(C_) {
    std::copy(weight, weight + static_cast<size_t>(C) * D, w.begin());
    std::copy(bias, bias + C, b.begin());
  }

  // One SGD step on B rows xs with labels, at lr / B `scale` and lr * wd `decay`.
  void step(const float* const* xs, const int* labels, int B, float scale, float decay) {
    logits(xs, B, w.data(), b.data(), padded, D, z.data());
    std::fill(bias_grad.begin(), bias_grad.end(), 0.0);
    for (int i = 0; i < B; ++i) {
      float at_label;
      const int arg = shifted_row(z.data() + static_cast<size_t>(i) * padded, C, labels[i], e.data(), &at_label);
      exps(e.data(), C);
      finish_row(e.data(), C, labels[i], arg, at_label, scale, g.data() + static_cast<size_t>(i) * padded,
                 bias_grad.data(), &sums);
    }
    const float keep = 1.0f - decay;
    step_weight(xs, B, g.data(), keep, padded, D, w.data());
    for (int c = 0; c < C; ++c) b[c] = b[c] * keep - static_cast<float>(bias_grad[c]);
  }
};

std::vector<int> lanes_of(const Attrs& attrs) {
  std::vector<int> lanes;
  const std::string& text = attrs.at("lanes");
  for (size_t at = 0; at < text.size();) {
    const size_t end = std::min(text.find(',', at), text.size());
    lanes.push_back(std::stoi(text.substr(at, end - at)));
    at = end + 1;
  }
  return lanes;
}

MXReturnValue epoch(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out, const OpResource&) {
  const std::vector<int> lanes = lanes_of(attrs);
  const int B = std::stoi(attrs.at("batch_size"));
  MXTensor &X = (*in)[0], &order = (*in)[2], &weight = (*in)[5];
  const int D = static_cast<int>(X.shape[1]), n = static_cast<int>(order.shape[1]);
  const int K = static_cast<int>((*in)[3].shape[1]), C = static_cast<int>(weight.shape[0]) / K;
  const float* x = X.data<float>();
  const int64_t* rows = order.data<int64_t>();
  const float* lrs = (*in)[3].data<float>();
  const float* decays = (*in)[4].data<float>();
  std::vector<int> label;
  if (!labels_of((*in)[1].data<float>(), static_cast<int>(X.shape[0]), C, "sgd_epoch", &label)) return MX_FAIL;
  for (int64_t i = 0; i < order.size(); ++i)
    if (rows[i] < 0 || rows[i] >= X.shape[0]) {
      MX_ERROR_MSG << "sgd_epoch: row " << rows[i] << " outside 0.." << X.shape[0] - 1;
      return MX_FAIL;
    }
  std::vector<int> lane_of;
  for (size_t l = 0; l < lanes.size(); ++l) lane_of.insert(lane_of.end(), lanes[l], static_cast<int>(l));
  float* new_weight = (*out)[0].data<float>();
  float* new_bias = (*out)[1].data<float>();
  const int threads = std::max(1, std::min(K, omp_get_max_threads()));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int first = static_cast<int>(static_cast<long>(K) * t / T), end = static_cast<int>(static_cast<long>(K) * (t + 1) / T);
    std::vector<Model> models;
    for (int m = first; m < end; ++m)
      models.emplace_back(weight.data<float>() + static_cast<size_t>(m) * C * D, (*in)[6].data<float>() + m * C, C, D, B);
    std::vector<const float*> xs(B);
    std::vector<int> ys(B);
    for (int s = 0, start = 0; start < n; ++s, start += B) {
      const int size = std::min(B, n - start);
      int lane = -1;
      for (int m = first; m < end; ++m) {
        if (lane_of[m] != lane) {  // this lane's rows of the step
          lane = lane_of[m];
          for (int i = 0; i < size; ++i) {
            const int64_t row = rows[static_cast<size_t>(lane) * n + start + i];
            xs[i] = x + row * D;
            ys[i] = label[row];
          }
        }
        models[m - first].step(xs.data(), ys.data(), size, lrs[static_cast<size_t>(s) * K + m],
                               decays[static_cast<size_t>(s) * K + m]);
      }
    }
    for (int m = first; m < end; ++m) {
      const Model& model = models[m - first];
      std::copy(model.w.begin(), model.w.begin() + static_cast<size_t>(C) * D, new_weight + static_cast<size_t>(m) * C * D);
      std::copy(model.b.begin(), model.b.begin() + C, new_bias + m * C);
      (*out)[2].data<float>()[m] = static_cast<float>(model.sums.loss);
      (*out)[3].data<float>()[m] = model.sums.correct;
    }
  }
  return MX_SUCCESS;
}

MXReturnValue no_backward(const Attrs&, std::vector<MXTensor>*, std::vector<MXTensor>* out, const OpResource&) {
  for (MXTensor& grad : *out) std::fill(grad.data<float>(), grad.data<float>() + grad.size(), 0.0f);
  return MX_SUCCESS;
}

MXReturnValue parse(const Attrs&, int* num_in, int* num_out) {
  *num_in = 7;
  *num_out = 4;
  return MX_SUCCESS;
}

MXReturnValue types(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  for (size_t i = 0; i < in->size(); ++i)
    if ((*in)[i] != (i == 2 ? kInt64 : kFloat32)) {
      MX_ERROR_MSG << "sgd_epoch: order int64, the other inputs float32";
      return MX_FAIL;
    }
  *out = {kFloat32, kFloat32, kFloat32, kFloat32};
  return MX_SUCCESS;
}

MXReturnValue shapes(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                     std::vector<std::vector<unsigned int>>* out) {
  const auto& s = *in;
  const std::vector<int> lanes = lanes_of(attrs);
  const int B = std::stoi(attrs.at("batch_size"));
  long K = 0;
  for (int models : lanes) K += models;
  const bool fit = s[0].size() == 2 && s[1].size() == 1 && s[1][0] == s[0][0] && s[2].size() == 2 &&
                   s[2][0] == lanes.size() && s[3].size() == 2 && s[3][1] == K && s[4] == s[3] &&
                   s[3][0] == (s[2][1] + B - 1) / B && s[5].size() == 2 && s[5][1] == s[0][1] &&
                   K > 0 && s[5][0] % K == 0 && s[6].size() == 1 && s[6][0] == s[5][0] && B > 0;
  if (!fit) {
    MX_ERROR_MSG << "sgd_epoch: X (N, D), labels (N), order (lanes, n), lrs and decays (steps, models), "
                    "weight (models * C, D), bias (models * C)";
    return MX_FAIL;
  }
  *out = {s[5], s[6], {static_cast<unsigned>(K)}, {static_cast<unsigned>(K)}};
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(sgd_epoch)
    .setForward(epoch, "cpu")
    .setBackward(no_backward, "cpu")
    .setParseAttrs(parse)
    .setInferType(types)
    .setInferShape(shapes);
