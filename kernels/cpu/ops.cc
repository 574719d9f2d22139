#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/matmul_avx2.h"
#include "kernels/cpu/vector_math.h"

namespace kiln::kernels::cpu {

template <class F>
void EncoderForward(F* out, const int32_t* inp, const F* wte, const F* wpe, int B, int T, int C) {
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      F* o = out + (static_cast<int64_t>(b) * T + t) * C;
      const F* e = wte + static_cast<int64_t>(inp[b * T + t]) * C;
      const F* p = wpe + static_cast<int64_t>(t) * C;
      for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
    }
  }
}

template <class F>
void EmbedRows(F* out, const int32_t* token, const int32_t* pos, const F* wte, const F* wpe, int N,
               int C) {
  for (int r = 0; r < N; ++r) {
    F* o = out + static_cast<int64_t>(r) * C;
    const F* e = wte + static_cast<int64_t>(token[r]) * C;
    const F* p = wpe + static_cast<int64_t>(pos[r]) * C;
    for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

template <class F>
void GatherRows(F* out, const F* in, const int32_t* rows, int n, int C) {
  for (int s = 0; s < n; ++s) {
    std::copy_n(in + static_cast<int64_t>(rows[s]) * C, C, out + static_cast<int64_t>(s) * C);
  }
}

template <class F>
void EncoderBackward(F* dwte, F* dwpe, const F* dout, const int32_t* inp, int B, int T, int C) {
  // Serial: several positions may share a token row.
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const F* d = dout + (static_cast<int64_t>(b) * T + t) * C;
      F* e = dwte + static_cast<int64_t>(inp[b * T + t]) * C;
      F* p = dwpe + static_cast<int64_t>(t) * C;
      for (int c = 0; c < C; ++c) {
        e[c] += d[c];
        p[c] += d[c];
      }
    }
  }
}

template <class F>
void LayerNormForward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias, int N,
                      int C) {
  const F eps = F(1e-5);
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const F* x = inp + static_cast<int64_t>(n) * C;
    F m = 0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= static_cast<F>(C);
    F v = 0;
    for (int c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
    v /= static_cast<F>(C);
    F s = F(1) / std::sqrt(v + eps);
    F* o = out + static_cast<int64_t>(n) * C;
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

template <class F>
void LayerNormBackward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                       const F* mean, const F* rstd, int N, int C) {
  // Rows in parallel for dinp; the parameter gradients are reduced serially
  // afterwards so the result does not depend on the thread count.
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const F* d = dout + static_cast<int64_t>(n) * C;
    const F* x = inp + static_cast<int64_t>(n) * C;
    F* dx = dinp + static_cast<int64_t>(n) * C;
    F dnorm_mean = 0, dnorm_norm_mean = 0;
    for (int c = 0; c < C; ++c) {
      F norm = (x[c] - mean[n]) * rstd[n];
      F dnorm = weight[c] * d[c];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
    }
    dnorm_mean /= static_cast<F>(C);
    dnorm_norm_mean /= static_cast<F>(C);
    for (int c = 0; c < C; ++c) {
      F norm = (x[c] - mean[n]) * rstd[n];
      F dnorm = weight[c] * d[c];
      dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd[n];
    }
  }
  for (int n = 0; n < N; ++n) {
    const F* d = dout + static_cast<int64_t>(n) * C;
    const F* x = inp + static_cast<int64_t>(n) * C;
    for (int c = 0; c < C; ++c) {
      dbias[c] += d[c];
      dweight[c] += (x[c] - mean[n]) * rstd[n] * d[c];
    }
  }
}

// The matmuls are tiled so that a tile of one operand stays in cache while the
// other streams past it: untiled, the backward would re-read the whole weight
// matrix for every input row (gigabytes per step at GPT-2 widths).
constexpr int kTileRows = 32;  // Rows of the streamed operand per tile.
constexpr int kTileOut = 32;   // Output features per tile.

// out[n..n+rows, o] as plain dot products (the edges of a tile).
template <class F>
inline void MatmulDot(F* out, const F* inp, const F* weight, const F* bias, int n, int o, int C,
                      int OC, int rows) {
  const F* w = weight + static_cast<int64_t>(o) * C;
  for (int r = 0; r < rows; ++r) {
    const F* x = inp + static_cast<int64_t>(n + r) * C;
    F sum = bias != nullptr ? bias[o] : F(0);
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c] * w[c];
    out[static_cast<int64_t>(n + r) * OC + o] = sum;
  }
}

// One output of a single row, reading the weight row front to back with
// four independent vector sums: the whole matrix is then one sequential
// stream, which the hardware prefetcher follows (8 rows in lockstep are 8
// short streams it does not). float only; other types use MatmulDot.
template <class F>
inline F RowDot(const F* x, const F* w, int C) {
  F sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int c = 0; c < C; ++c) sum += x[c] * w[c];
  return sum;
}

#if defined(__GNUC__)
template <>
inline float RowDot<float>(const float* x, const float* w, int C) {
  // memcpy into locals: unaligned loads, and no vector passed or returned by
  // value (which -Wpsabi flags when the ISA lacks 32-byte registers).
  typedef float V __attribute__((vector_size(32)));
  V s[4] = {}, a, b;
  int c = 0;
  for (; c + 32 <= C; c += 32) {
    for (int k = 0; k < 4; ++k) {
      __builtin_memcpy(&a, x + c + 8 * k, sizeof a);
      __builtin_memcpy(&b, w + c + 8 * k, sizeof b);
      s[k] += a * b;
    }
  }
  for (; c + 8 <= C; c += 8) {
    __builtin_memcpy(&a, x + c, sizeof a);
    __builtin_memcpy(&b, w + c, sizeof b);
    s[0] += a * b;
  }
  const V t = (s[0] + s[1]) + (s[2] + s[3]);
  float sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; c < C; ++c) sum += x[c] * w[c];
  return sum;
}
#endif

template <class F>
void MatmulForward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC) {
#if KILN_MATMUL_AVX2
  if constexpr (std::is_same_v<F, float>) {
    if (N > 1) return internal::MatmulRowsAvx2(out, inp, weight, bias, N, C, OC);
  }
#endif
  // Parallel over tiles of (rows x output features); inside one, each weight
  // row is used for kTileRows dot products while it is hot.
  const int row_tiles = (N + kTileRows - 1) / kTileRows;
  const int out_tiles = (OC + kTileOut - 1) / kTileOut;
#pragma omp parallel for collapse(2) schedule(static)
  for (int rt = 0; rt < row_tiles; ++rt) {
    for (int ot = 0; ot < out_tiles; ++ot) {
      const int n0 = rt * kTileRows, n1 = std::min(N, n0 + kTileRows);
      const int o0 = ot * kTileOut, o1 = std::min(OC, o0 + kTileOut);
      int n = n0;
      // 2 rows x 4 outputs at a time: 6 loads feed 8 multiply-adds, so the
      // loop is bound by arithmetic rather than by loads.
      for (; n + 2 <= n1; n += 2) {
        const F* x0 = inp + static_cast<int64_t>(n) * C;
        const F* x1 = x0 + C;
        int o = o0;
        for (; o + 4 <= o1; o += 4) {
          const F* w0 = weight + static_cast<int64_t>(o) * C;
          const F *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
          F a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
          for (int c = 0; c < C; ++c) {
            a0 += x0[c] * w0[c];
            a1 += x0[c] * w1[c];
            a2 += x0[c] * w2[c];
            a3 += x0[c] * w3[c];
            b0 += x1[c] * w0[c];
            b1 += x1[c] * w1[c];
            b2 += x1[c] * w2[c];
            b3 += x1[c] * w3[c];
          }
          const F acc[2][4] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
          for (int r = 0; r < 2; ++r) {
            F* y = out + static_cast<int64_t>(n + r) * OC + o;
            for (int k = 0; k < 4; ++k) y[k] = acc[r][k] + (bias != nullptr ? bias[o + k] : F(0));
          }
        }
        for (; o < o1; ++o) MatmulDot(out, inp, weight, bias, n, o, C, OC, 2);
      }
      // A last single row (decoding is all single rows): one output at a
      // time, each weight row read front to back (RowDot).
      for (; n < n1; ++n) {
        const F* x0 = inp + static_cast<int64_t>(n) * C;
        F* y = out + static_cast<int64_t>(n) * OC;
        for (int o = o0; o < o1; ++o) {
          y[o] = RowDot(x0, weight + static_cast<int64_t>(o) * C, C) +
                 (bias != nullptr ? bias[o] : F(0));
        }
      }
    }
  }
}

template <class F>
void MatmulBackward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                    int N, int C, int OC) {
  // dinp[n,:] += sum_o dout[n,o] * weight[o,:]: a tile of kTileRows input
  // gradients stays in cache while the weight rows stream past once per tile.
  const int row_tiles = (N + kTileRows - 1) / kTileRows;
#pragma omp parallel for schedule(static)
  for (int rt = 0; rt < row_tiles; ++rt) {
    const int n0 = rt * kTileRows, n1 = std::min(N, n0 + kTileRows);
    for (int o = 0; o < OC; ++o) {
      const F* w = weight + static_cast<int64_t>(o) * C;
      for (int n = n0; n < n1; ++n) {
        const F g = dout[static_cast<int64_t>(n) * OC + o];
        F* dx = dinp + static_cast<int64_t>(n) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c) dx[c] += g * w[c];
      }
    }
  }
  // dweight[o,:] += sum_n dout[n,o] * inp[n,:]: a tile of kTileOut weight
  // gradients stays in cache while the input rows stream past. Each tile is
  // one thread's, and n runs in order, so the sums do not depend on threads.
  const int out_tiles = (OC + kTileOut - 1) / kTileOut;
#pragma omp parallel for schedule(static)
  for (int ot = 0; ot < out_tiles; ++ot) {
    const int o0 = ot * kTileOut, o1 = std::min(OC, o0 + kTileOut);
    for (int n = 0; n < N; ++n) {
      const F* x = inp + static_cast<int64_t>(n) * C;
      const F* d = dout + static_cast<int64_t>(n) * OC;
      for (int o = o0; o < o1; ++o) {
        const F g = d[o];
        F* dw = dweight + static_cast<int64_t>(o) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c) dw[c] += g * x[c];
        if (dbias != nullptr) dbias[o] += g;
      }
    }
  }
}

template <class F>
void AttentionForward(F* out, F* preatt, F* att, const F* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int64_t C3 = 3LL * C;
  const F scale = F(1) / std::sqrt(F(hs));
#pragma omp parallel for collapse(3)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < NH; ++h) {
        const F* q = qkv + (static_cast<int64_t>(b) * T + t) * C3 + h * hs;
        F* pre = preatt + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        F* a = att + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        F maxv = -INFINITY;
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* k = qkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + C;
          F s = 0;
          for (int i = 0; i < hs; ++i) s += q[i] * k[i];
          s *= scale;
          pre[t2] = s;
          maxv = std::max(maxv, s);
        }
        F sum = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          F e = std::exp(pre[t2] - maxv);
          a[t2] = e;
          sum += e;
        }
        const F inv = F(1) / sum;
        for (int t2 = 0; t2 < T; ++t2) {
          if (t2 <= t) {
            a[t2] *= inv;
          } else {
            a[t2] = 0;
            pre[t2] = 0;
          }
        }
        F* o = out + (static_cast<int64_t>(b) * T + t) * C + h * hs;
        for (int i = 0; i < hs; ++i) o[i] = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* v = qkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + 2 * C;
          const F w = a[t2];
          for (int i = 0; i < hs; ++i) o[i] += w * v[i];
        }
      }
    }
  }
}

template <class F>
void AttentionBackward(F* dqkv, F* dpreatt, F* datt, const F* dout, const F* qkv, const F* att,
                       int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int64_t C3 = 3LL * C;
  const F scale = F(1) / std::sqrt(F(hs));
  // Each (b, h) touches only its own slices of dqkv: parallel over them.
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const F* a = att + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        F* da = datt + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        F* dpre = dpreatt + ((static_cast<int64_t>(b) * NH + h) * T + t) * T;
        const F* d = dout + (static_cast<int64_t>(b) * T + t) * C + h * hs;
        const F* q = qkv + (static_cast<int64_t>(b) * T + t) * C3 + h * hs;
        F* dq = dqkv + (static_cast<int64_t>(b) * T + t) * C3 + h * hs;
        // out = att @ v
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* v = qkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + 2 * C;
          F* dv = dqkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + 2 * C;
          F s = 0;
          for (int i = 0; i < hs; ++i) {
            s += v[i] * d[i];
            dv[i] += a[t2] * d[i];
          }
          da[t2] += s;
        }
        // softmax: dpre = att * (datt - sum(att * datt))
        F dot = 0;
        for (int t2 = 0; t2 <= t; ++t2) dot += a[t2] * da[t2];
        for (int t2 = 0; t2 <= t; ++t2) dpre[t2] += a[t2] * (da[t2] - dot);
        // pre = scale * q . k
        for (int t2 = 0; t2 <= t; ++t2) {
          const F* k = qkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + C;
          F* dk = dqkv + (static_cast<int64_t>(b) * T + t2) * C3 + h * hs + C;
          const F g = dpre[t2] * scale;
          for (int i = 0; i < hs; ++i) {
            dq[i] += k[i] * g;
            dk[i] += q[i] * g;
          }
        }
      }
    }
  }
}

namespace {
template <class F>
constexpr F kGeluScale = F(0.7978845608028654);  // sqrt(2 / pi)

// std::tanh, which GCC calls one element at a time; for float the
// vectorizable VectorTanh (within 2e-7 of it).
template <class F>
inline F Tanh(F u) {
  return std::tanh(u);
}
template <>
inline float Tanh<float>(float u) {
  return VectorTanh(u);
}
}  // namespace

template <class F>
void GeluForward(F* out, const F* inp, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) {
    const F x = inp[i];
    out[i] = F(0.5) * x * (F(1) + Tanh(kGeluScale<F> * (x + F(0.044715) * x * x * x)));
  }
}

template <class F>
void GeluBackward(F* dinp, const F* inp, const F* dout, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) {
    const F x = inp[i];
    const F u = kGeluScale<F> * (x + F(0.044715) * x * x * x);
    const F th = Tanh(u);
    const F sech2 = F(1) - th * th;
    const F grad = F(0.5) * (F(1) + th) +
                   F(0.5) * x * sech2 * kGeluScale<F> * (F(1) + F(3) * F(0.044715) * x * x);
    dinp[i] += grad * dout[i];
  }
}

template <class F>
void ResidualForward(F* out, const F* a, const F* b, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class F>
void ResidualBackward(F* da, F* db, const F* dout, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

template <class F>
void SoftmaxCrossEntropyForward(F* losses, F* probs, const F* logits, const int32_t* targets, int N,
                                int V, int Vp) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const F* l = logits + static_cast<int64_t>(n) * Vp;
    F* p = probs + static_cast<int64_t>(n) * Vp;
    F maxv = -INFINITY;
    for (int i = 0; i < V; ++i) maxv = std::max(maxv, l[i]);
    F sum = 0;
    for (int i = 0; i < V; ++i) {
      p[i] = std::exp(l[i] - maxv);
      sum += p[i];
    }
    for (int i = 0; i < V; ++i) p[i] /= sum;
    for (int i = V; i < Vp; ++i) p[i] = 0;
    losses[n] = -std::log(p[targets[n]]);
  }
}

template <class F>
void SoftmaxCrossEntropyBackward(F* dlogits, const F* dlosses, const F* probs,
                                 const int32_t* targets, int N, int V, int Vp) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    F* dl = dlogits + static_cast<int64_t>(n) * Vp;
    const F* p = probs + static_cast<int64_t>(n) * Vp;
    const F g = dlosses[n];
    for (int i = 0; i < V; ++i) dl[i] += (p[i] - (i == targets[n] ? F(1) : F(0))) * g;
  }
}

template <class F>
void AdamW(F* params, const F* grads, F* m, F* v, int64_t n, const AdamWParams& a) {
  const F b1 = a.beta1, b2 = a.beta2;
  const F c1 = F(1) - std::pow(b1, static_cast<F>(a.step));
  const F c2 = F(1) - std::pow(b2, static_cast<F>(a.step));
  const F lr = a.learning_rate, eps = a.eps, wd = a.weight_decay;
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; ++i) {
    const F g = grads[i];
    m[i] = b1 * m[i] + (F(1) - b1) * g;
    v[i] = b2 * v[i] + (F(1) - b2) * g * g;
    const F mhat = m[i] / c1;
    const F vhat = v[i] / c2;
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * params[i]);
  }
}

template <class F>
double GlobalNorm(const F* x, int64_t n) {
  // Fixed chunks summed in order, so the result (and with it gradient
  // clipping) does not depend on the number of threads.
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
    double sum = 0;
    for (int64_t i = c * kChunk; i < end; ++i) {
      sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    }
    partial[static_cast<size_t>(c)] = sum;
  }
  double total = 0;
  for (double p : partial) total += p;
  return std::sqrt(total);
}

#define KILN_INSTANTIATE(F)                                                                        \
  template void EncoderForward<F>(F*, const int32_t*, const F*, const F*, int, int, int);          \
  template void EncoderBackward<F>(F*, F*, const F*, const int32_t*, int, int, int);               \
  template void EmbedRows<F>(F*, const int32_t*, const int32_t*, const F*, const F*, int, int);    \
  template void GatherRows<F>(F*, const F*, const int32_t*, int, int);                             \
  template void LayerNormForward<F>(F*, F*, F*, const F*, const F*, const F*, int, int);           \
  template void LayerNormBackward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, \
                                     int, int);                                                    \
  template void MatmulForward<F>(F*, const F*, const F*, const F*, int, int, int);                 \
  template void MatmulBackward<F>(F*, F*, F*, const F*, const F*, const F*, int, int, int);        \
  template void AttentionForward<F>(F*, F*, F*, const F*, int, int, int, int);                     \
  template void AttentionBackward<F>(F*, F*, F*, const F*, const F*, const F*, int, int, int,      \
                                     int);                                                         \
  template void GeluForward<F>(F*, const F*, int64_t);                                             \
  template void GeluBackward<F>(F*, const F*, const F*, int64_t);                                  \
  template void ResidualForward<F>(F*, const F*, const F*, int64_t);                               \
  template void ResidualBackward<F>(F*, F*, const F*, int64_t);                                    \
  template void SoftmaxCrossEntropyForward<F>(F*, F*, const F*, const int32_t*, int, int, int);    \
  template void SoftmaxCrossEntropyBackward<F>(F*, const F*, const F*, const int32_t*, int, int,   \
                                               int);                                               \
  template void AdamW<F>(F*, const F*, F*, F*, int64_t, const AdamWParams&);                       \
  template double GlobalNorm<F>(const F*, int64_t);

KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)

}  // namespace kiln::kernels::cpu
