// Row gather on the GPU: picks rows of a [*, C] bf16 matrix (the serving
// decoder takes each sequence's last row this way). Conventions in
// kernels/cuda/precision.h; reference kernels/cpu/ops.h GatherRows.
// Thread-compatible: the functions keep no state.
#ifndef KILN_KERNELS_CUDA_GATHER_H_
#define KILN_KERNELS_CUDA_GATHER_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// out[s,:] = in[rows[s],:] for s < n; out must not overlap in. The device
// does not check the row indices.
Status GatherRows(bf16* out, const bf16* in, const int32_t* rows, int n, int C,
                  cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_GATHER_H_
