// Fused causal attention (the FlashAttention-2 scheme) for head size 64, the
// head size of every GPT-2 model: the T x T scores and probabilities are never
// written to memory. The forward keeps, per query row, the log-sum-exp of its
// scaled scores; the backward recomputes each tile's probabilities from it.
// Tensor-core products (mma.sync, bf16 in, float accumulation) on tiles that
// cp.async streams into shared memory while the previous tile is multiplied;
// the softmax in float. No atomics: the backward computes the key/value
// gradients and the query gradients in two kernels, so results are bitwise
// reproducible. Same layouts and reference as attention.h (kernels/cpu
// AttentionForward/AttentionBackward); tests/kernels/cuda/flash_attention_gpu_test.cc.
#ifndef KILN_KERNELS_CUDA_FLASH_ATTENTION_H_
#define KILN_KERNELS_CUDA_FLASH_ATTENTION_H_

#include <cuda_runtime.h>

#include <cstddef>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// Whether the fused kernels handle this head size (C / NH): 64.
bool FlashAttentionSupported(int head_size);

// qkv [B, T, 3C] -> out [B, T, C]; lse [B, NH, T] receives each query row's
// log2 of the sum of 2^(scaled score * log2 e), what the backward needs.
// InvalidArgument for an unsupported head size or shape.
Status FlashAttentionForward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream);

// Bytes of scratch FlashAttentionBackward needs (one float per query row).
std::size_t FlashAttentionBackwardScratchBytes(int B, int T, int NH);

// dqkv [B, T, 3C] = the gradient of the forward's out with respect to qkv,
// given dout [B, T, C], and the forward's out and lse. Every element of dqkv
// is written (nothing is added to it), so it needs no zeroing first.
Status FlashAttentionBackward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int B, int T, int C, int NH, void* scratch,
                              std::size_t scratch_bytes, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_FLASH_ATTENTION_H_
