// The precision conventions of kiln's CUDA kernels (kernels/cuda/*.h) and their
// bf16 storage type.
//
// Activations and activation gradients are bfloat16. Parameters live as float32
// master weights plus a bf16 copy that the forward and backward read; parameter
// gradients are float32, so accumulation over micro-batches, the gradient norm
// and AdamW lose nothing to bf16. Every kernel computes in float32 and rounds
// once, to nearest even, when it stores a bf16 value. Shapes and the meaning of
// each operation are those of kernels/cpu/ops.h, the CPU reference; backwards
// accumulate (+=) like it unless a header says otherwise.
//
// Every launcher is asynchronous on the stream it is given, checks its shape
// arguments (InvalidArgument) and returns the launch error, if any, as a
// Status (an error of an earlier asynchronous call may surface there too).
// Reductions are deterministic: no kernel adds floats with atomics, so the same
// inputs give bitwise the same outputs on the same device.
#ifndef KILN_KERNELS_CUDA_PRECISION_H_
#define KILN_KERNELS_CUDA_PRECISION_H_

#include <cuda_bf16.h>

namespace kiln::kernels::cuda {

using bf16 = __nv_bfloat16;

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_PRECISION_H_
