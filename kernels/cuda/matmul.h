// The linear layer on the GPU: bf16 GEMMs through cuBLASLt with float
// accumulation, the bias fused into the forward GEMM's epilogue, and the bias
// gradient as a deterministic column sum. Conventions in
// kernels/cuda/precision.h; reference kernels/cpu/ops.h MatmulForward and
// MatmulBackward. Thread-safety: that of the Blas passed in.
#ifndef KILN_KERNELS_CUDA_MATMUL_H_
#define KILN_KERNELS_CUDA_MATMUL_H_

#include <cuda_runtime.h>

#include <cstddef>

#include "base/status.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// out[n,o] = bias[o] + sum_c inp[n,c] * weight[o,c]: inp [N, C], weight
// [OC, C], out [N, OC]. bias may be null.
Status MatmulForward(const Blas& blas, bf16* out, const bf16* inp, const bf16* weight,
                     const bf16* bias, int N, int C, int OC, cudaStream_t stream);

// Floats of scratch MatmulBackward needs when it computes a bias gradient.
std::size_t MatmulBackwardScratchFloats(int N, int OC);

// dinp [N, C] += dout @ weight (bf16); dweight [OC, C] += dout^T @ inp
// (float); dbias [OC] += column sums of dout (float), unless dbias is null.
// `scratch` holds MatmulBackwardScratchFloats(N, OC) floats (may be null
// without dbias).
Status MatmulBackward(const Blas& blas, bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                      const bf16* inp, const bf16* weight, int N, int C, int OC, float* scratch,
                      cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_MATMUL_H_
