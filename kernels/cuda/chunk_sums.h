// Internal to kernels/cuda: deterministic column sums in two stages, used for
// the bias and LayerNorm parameter gradients. A kernel first writes one float
// partial per column for each chunk of kRowsPerChunk rows; AddChunkSums then
// adds each column's partials in chunk order. No atomics, so the result does
// not depend on scheduling.
#ifndef KILN_KERNELS_CUDA_CHUNK_SUMS_H_
#define KILN_KERNELS_CUDA_CHUNK_SUMS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"

namespace kiln::kernels::cuda {

constexpr int kRowsPerChunk = 64;

// The number of chunks `rows` rows make.
constexpr int RowChunks(int rows) { return (rows + kRowsPerChunk - 1) / kRowsPerChunk; }

// out[j] += sum over k in [0, chunks) of partials[k * stride + j], for j in
// [0, width), in increasing k.
Status AddChunkSums(float* out, const float* partials, int chunks, int width, int64_t stride,
                    cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_CHUNK_SUMS_H_
