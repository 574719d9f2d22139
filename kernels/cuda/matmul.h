// The linear layer on the GPU: bf16 GEMMs through cuBLASLt with float
// accumulation, the bias (and for the MLP the GELU and its derivative) fused
// into the GEMMs' epilogues, and the bias gradient as a deterministic column
// sum. Conventions in
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

// The MLP's first layer and its GELU in one GEMM (the GELU in cuBLASLt's
// epilogue, applied to the float result before rounding): pre [N, OC] =
// inp @ weight^T + bias, out [N, OC] = gelu(pre) (the tanh form of
// kernels/cpu GeluForward). bias may be null. OC must be a multiple of 8.
Status MatmulGeluForward(const Blas& blas, bf16* out, bf16* pre, const bf16* inp,
                         const bf16* weight, const bf16* bias, int N, int C, int OC,
                         cudaStream_t stream);

// Floats of scratch MatmulBackward needs when it computes a bias gradient.
std::size_t MatmulBackwardScratchFloats(int N, int OC);

// How MatmulBackward treats dinp.
struct MatmulBackwardOptions {
  // dinp = ... instead of dinp += ...: the caller need not zero it, and the
  // GEMM does not read it.
  bool overwrite_dinp = false;
  // When not null (needs overwrite_dinp), the layer's input was
  // gelu(gelu_input), gelu_input [N, C]: dinp becomes the gradient with
  // respect to gelu_input, (dout @ weight) * gelu'(gelu_input), computed in
  // the GEMM's epilogue. C must then be a multiple of 8.
  const bf16* gelu_input = nullptr;
};

// dinp [N, C] += dout @ weight (bf16; see MatmulBackwardOptions); dweight
// [OC, C] += dout^T @ inp (float); dbias [OC] += column sums of dout (float),
// unless dbias is null. `scratch` holds MatmulBackwardScratchFloats(N, OC)
// floats (may be null without dbias).
Status MatmulBackward(const Blas& blas, bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                      const bf16* inp, const bf16* weight, int N, int C, int OC, float* scratch,
                      cudaStream_t stream, const MatmulBackwardOptions& options = {});

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_MATMUL_H_
