// kernels/cuda/classifier.h: one block per row. Each thread keeps an online
// (max, sum of exp) over its chunks of the row; the block combines them in a
// fixed order, then writes the gradient in a second pass.
#include "kernels/cuda/classifier.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// (max, sum) := the softmax normaliser of the union of two sets of values,
// each given as its max and its sum of exp(x - max). An empty set is
// (-inf, 0).
__device__ __forceinline__ void Combine(float& max, float& sum, float other_max, float other_sum) {
  const float m = fmaxf(max, other_max);
  if (m == -INFINITY) return;  // Both empty.
  sum = sum * expf(max - m) + other_sum * expf(other_max - m);
  max = m;
}

template <int kVec>
__global__ void FusedClassifierKernel(bf16* dlogits, float* losses, const bf16* logits,
                                      const int32_t* targets, float dloss, int V, int Vp) {
  __shared__ float warp_max[kWarpSize], warp_sum[kWarpSize];
  const int64_t row = blockIdx.x;
  const bf16* x = logits + row * Vp;
  const int target = targets[row];
  // Read before the barrier below: after it, the row may be overwritten.
  const float target_logit = __bfloat162float(x[target]);

  float max = -INFINITY, sum = 0.0f;
  for (int c = threadIdx.x * kVec; c < V; c += blockDim.x * kVec) {
    float v[kVec];
    LoadBf16(v, x + c);  // In bounds: Vp % kVec == 0, so c + kVec <= Vp.
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (c + k >= V) break;
      if (v[k] > max) {
        sum = sum * expf(max - v[k]) + 1.0f;
        max = v[k];
      } else {
        sum += expf(v[k] - max);
      }
    }
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float other_max = __shfl_xor_sync(kFullMask, max, offset);
    const float other_sum = __shfl_xor_sync(kFullMask, sum, offset);
    Combine(max, sum, other_max, other_sum);
  }
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (lane == 0) {
    warp_max[warp] = max;
    warp_sum[warp] = sum;
  }
  __syncthreads();
  max = warp_max[0];
  sum = warp_sum[0];
  for (int w = 1; w < static_cast<int>(blockDim.x) / kWarpSize; ++w) {
    Combine(max, sum, warp_max[w], warp_sum[w]);
  }
  if (threadIdx.x == 0) losses[row] = logf(sum) + max - target_logit;
  if (dlogits == nullptr) return;

  const float inv_sum = 1.0f / sum;
  bf16* dx = dlogits + row * Vp;
  for (int c = threadIdx.x * kVec; c < Vp; c += blockDim.x * kVec) {
    float v[kVec];
    LoadBf16(v, x + c);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int col = c + k;
      const float p = expf(v[k] - max) * inv_sum;
      v[k] = col < V ? (p - (col == target ? 1.0f : 0.0f)) * dloss : 0.0f;
    }
    StoreBf16(dx + c, v);
  }
}

}  // namespace

Status FusedClassifier(bf16* dlogits, float* losses, const bf16* logits, const int32_t* targets,
                       float dloss, int N, int V, int Vp, cudaStream_t stream) {
  if (N <= 0 || V <= 0 || Vp < V) {
    return ShapeError("FusedClassifier", "needs N > 0 and 0 < V <= Vp");
  }
  const bool vector =
      Vp % kBf16PerVector == 0 && Aligned16(logits) && (dlogits == nullptr || Aligned16(dlogits));
  const auto blocks = static_cast<unsigned>(N);
  if (vector) {
    FusedClassifierKernel<kBf16PerVector>
        <<<blocks, kThreads, 0, stream>>>(dlogits, losses, logits, targets, dloss, V, Vp);
  } else {
    FusedClassifierKernel<1>
        <<<blocks, kThreads, 0, stream>>>(dlogits, losses, logits, targets, dloss, V, Vp);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
