// The CPU kernels of kiln's GPT engine: the fast CPU training path and the
// reference every CUDA kernel is tested against. Each forward has its
// backward; backwards accumulate (+=) into gradients, so callers zero them
// once per step. Shapes: B batch, T sequence, C channels, NH heads, V vocab
// (Vp padded, columns V..Vp-1 ignored), N = B*T rows. Tensors are row-major
// and contiguous. Templated on the scalar: float for training, double for the
// gradient checks. Loops are OpenMP-parallel over independent rows and
// written so the compiler vectorises the inner ones.
#ifndef KILN_KERNELS_CPU_OPS_H_
#define KILN_KERNELS_CPU_OPS_H_

#include <cstdint>

namespace kiln::kernels::cpu {

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
template <class F>
void EncoderForward(F* out, const int32_t* inp, const F* wte, const F* wpe, int B, int T, int C);
template <class F>
void EncoderBackward(F* dwte, F* dwpe, const F* dout, const int32_t* inp, int B, int T, int C);

// The encoder for rows at arbitrary positions (serving: each row is one
// sequence's next token): out[r,:] = wte[token[r],:] + wpe[pos[r],:].
template <class F>
void EmbedRows(F* out, const int32_t* token, const int32_t* pos, const F* wte, const F* wpe, int N,
               int C);

// out[s,:] = in[rows[s],:] for s < n: picks rows (each sequence's last) out
// of [*, C].
template <class F>
void GatherRows(F* out, const F* in, const int32_t* rows, int n, int C);

// Per row: out = (x - mean) / sqrt(var + 1e-5) * weight + bias; saves mean
// and rstd for the backward.
template <class F>
void LayerNormForward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias, int N,
                      int C);
template <class F>
void LayerNormBackward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                       const F* mean, const F* rstd, int N, int C);

// out[n,o] = bias[o] + sum_c inp[n,c] * weight[o,c]   (bias may be null)
template <class F>
void MatmulForward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC);
template <class F>
void MatmulBackward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                    int N, int C, int OC);

// Causal multi-head self-attention over qkv [B,T,3C] (q, k, v each C wide,
// head h at h*C/NH). preatt and att are [B,NH,T,T] (softmax of the scaled
// scores; entries above the diagonal are zero). out is [B,T,C].
template <class F>
void AttentionForward(F* out, F* preatt, F* att, const F* qkv, int B, int T, int C, int NH);
template <class F>
void AttentionBackward(F* dqkv, F* dpreatt, F* datt, const F* dout, const F* qkv, const F* att,
                       int B, int T, int C, int NH);

// GELU, tanh approximation (as GPT-2).
template <class F>
void GeluForward(F* out, const F* inp, int64_t n);
template <class F>
void GeluBackward(F* dinp, const F* inp, const F* dout, int64_t n);

// out = a + b
template <class F>
void ResidualForward(F* out, const F* a, const F* b, int64_t n);
template <class F>
void ResidualBackward(F* da, F* db, const F* dout, int64_t n);

// probs = softmax(logits[:, :V]) (padding columns 0); losses[n] =
// -log probs[n, targets[n]]. The backward adds (probs - onehot) * dlosses[n]
// to dlogits for the first V columns.
template <class F>
void SoftmaxCrossEntropyForward(F* losses, F* probs, const F* logits, const int32_t* targets, int N,
                                int V, int Vp);
template <class F>
void SoftmaxCrossEntropyBackward(F* dlogits, const F* dlosses, const F* probs,
                                 const int32_t* targets, int N, int V, int Vp);

struct AdamWParams {
  float learning_rate = 3e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;  // 1-based, for bias correction.
};

// One AdamW step over n parameters (decoupled weight decay).
template <class F>
void AdamW(F* params, const F* grads, F* m, F* v, int64_t n, const AdamWParams& p);

// sqrt(sum of squares) of n values, accumulated in double.
template <class F>
double GlobalNorm(const F* x, int64_t n);

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_OPS_H_
