// Causal multi-head self-attention on the GPU, as llm.c's cuBLAS version:
// q, k and v are permuted to [B, NH, T, hs], the scores and the weighted sum
// are strided-batched cuBLAS GEMMs (bf16 in, float accumulation), and the
// scaled causal softmax and its backward are kernels of their own. Conventions
// in kernels/cuda/precision.h; reference kernels/cpu/ops.h AttentionForward
// and AttentionBackward. Thread-safety: that of the Blas passed in.
#ifndef KILN_KERNELS_CUDA_ATTENTION_H_
#define KILN_KERNELS_CUDA_ATTENTION_H_

#include <cuda_runtime.h>

#include <cstddef>

#include "base/status.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// Bytes of scratch AttentionForward and AttentionBackward need: the permuted
// q, k, v and their gradients, the head-major output and its gradient (bf16,
// 7 x B*T*C in all), the float scores (B*NH*T*T) and their bf16 gradient.
std::size_t AttentionScratchBytes(int B, int T, int C, int NH);

// qkv [B, T, 3C] (q, k, v each C wide, head h at h*C/NH) -> out [B, T, C].
// att [B, NH, T, T] receives the softmax of the scaled scores, zero above the
// diagonal (the backward needs it). The scores themselves stay in scratch.
Status AttentionForward(const Blas& blas, bf16* out, bf16* att, const bf16* qkv, int B, int T,
                        int C, int NH, void* scratch, std::size_t scratch_bytes,
                        cudaStream_t stream);

// dqkv [B, T, 3C] += the gradient of the forward's out with respect to qkv,
// given dout [B, T, C] and the forward's att.
Status AttentionBackward(const Blas& blas, bf16* dqkv, const bf16* dout, const bf16* qkv,
                         const bf16* att, int B, int T, int C, int NH, void* scratch,
                         std::size_t scratch_bytes, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_ATTENTION_H_
