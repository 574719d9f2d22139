// The fused classifier on the GPU: softmax over the vocabulary, the
// cross-entropy loss and its gradient with respect to the logits, in one pass
// over each row (the logits are read twice, the second time from L2).
// Conventions in kernels/cuda/precision.h; reference kernels/cpu/ops.h
// SoftmaxCrossEntropyForward followed by SoftmaxCrossEntropyBackward with
// every dlosses[n] = dloss. Thread-compatible: the functions keep no state.
#ifndef KILN_KERNELS_CUDA_CLASSIFIER_H_
#define KILN_KERNELS_CUDA_CLASSIFIER_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// For each of the N rows of logits [N, Vp], whose columns V..Vp-1 are padding:
// losses[n] = -log softmax(logits[n, :V])[targets[n]] (float), and, unless
// dlogits is null, dlogits[n, i] = (softmax(...)[i] - (i == targets[n])) *
// dloss for i < V and 0 for the padding. dlogits is written, not accumulated,
// and may alias logits (the logits then become their own gradient). Targets
// must lie in [0, V); the device does not check them.
Status FusedClassifier(bf16* dlogits, float* losses, const bf16* logits, const int32_t* targets,
                       float dloss, int N, int V, int Vp, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_CLASSIFIER_H_
