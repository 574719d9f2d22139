// LayerNorm on the GPU: the forward, the forward fused with the residual add
// before it, and the backward. Conventions in kernels/cuda/precision.h;
// reference kernels/cpu/ops.h LayerNormForward/LayerNormBackward (eps 1e-5).
// Thread-compatible: the functions keep no state.
#ifndef KILN_KERNELS_CUDA_LAYERNORM_H_
#define KILN_KERNELS_CUDA_LAYERNORM_H_

#include <cuda_runtime.h>

#include <cstddef>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// Per row of inp [N, C]: out = (x - mean) * rstd * weight + bias, saving the
// float mean and rstd [N] for the backward.
Status LayerNormForward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                        const bf16* bias, int N, int C, cudaStream_t stream);

// residual = a + b (rounded to bf16), then LayerNormForward of residual: the
// normalised value is that of the stored bf16 residual, which is what the
// backward sees. `residual` may alias `a` or `b`.
Status ResidualLayerNormForward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                                const bf16* b, const bf16* weight, const bf16* bias, int N, int C,
                                cudaStream_t stream);

// Floats of scratch LayerNormBackward needs.
std::size_t LayerNormBackwardScratchFloats(int N, int C);

// dinp += d(loss)/d(inp) (bf16); dweight, dbias += their gradients (float).
// `scratch` holds LayerNormBackwardScratchFloats(N, C) floats.
Status LayerNormBackward(bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                         const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                         int N, int C, float* scratch, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_LAYERNORM_H_
