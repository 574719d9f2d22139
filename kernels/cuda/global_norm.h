// The global gradient norm on the GPU: sqrt of the sum of squares of a float
// tensor, for gradient clipping. Conventions in kernels/cuda/precision.h;
// reference kernels/cpu/ops.h GlobalNorm. Thread-compatible: no state.
#ifndef KILN_KERNELS_CUDA_GLOBAL_NORM_H_
#define KILN_KERNELS_CUDA_GLOBAL_NORM_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace kiln::kernels::cuda {

// Floats of scratch GlobalNorm needs (a constant: one partial per block).
std::size_t GlobalNormScratchFloats();

// *norm (device memory) = sqrt(sum of x[i]^2 for i < n). Two stages: a fixed
// grid of blocks each writes the float sum of its grid-stride share, then one
// block adds those partials in double in a fixed order. The grid depends only
// on n, so the result is bitwise reproducible run to run (and across devices).
Status GlobalNorm(float* norm, const float* x, int64_t n, float* scratch, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_GLOBAL_NORM_H_
