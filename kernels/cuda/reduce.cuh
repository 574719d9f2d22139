// Internal to kernels/cuda: deterministic warp and block reductions (sums and
// maxima). Each combines values in a fixed order, so equal inputs give
// bitwise equal sums.
#ifndef KILN_KERNELS_CUDA_REDUCE_CUH_
#define KILN_KERNELS_CUDA_REDUCE_CUH_

namespace kiln::kernels::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// The sum over the 32 lanes of a warp, returned to every lane (all must call).
template <class T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

template <class T>
__device__ __forceinline__ T WarpMax(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = max(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// The sum over a block, returned to every thread. Every thread of the block
// must call it; blockDim.x must be a multiple of 32. `shared` holds 32 values
// and may be reused by the next call.
template <class T>
__device__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = WarpSum(v);
  __syncthreads();  // A previous call may still be reading `shared`.
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return WarpSum(lane < warps ? shared[lane] : T(0));
}

// The maximum over a block, returned to every thread; as BlockSum.
__device__ __forceinline__ float BlockMax(float v, float* shared) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = WarpMax(v);
  __syncthreads();  // A previous call may still be reading `shared`.
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return WarpMax(lane < warps ? shared[lane] : -INFINITY);
}

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_REDUCE_CUH_
