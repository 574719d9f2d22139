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

// `warp_reduce` (WarpSum or WarpMax) over a block, returned to every thread:
// each warp's result, then the warps' results (`identity` for the lanes
// past them). Every thread of the block must call it; blockDim.x must be a
// multiple of 32. `shared` holds 32 values and may be reused by the next
// call.
template <class T, class WarpReduce>
__device__ __forceinline__ T BlockReduce(T v, T* shared, T identity, WarpReduce warp_reduce) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  v = warp_reduce(v);
  __syncthreads();  // A previous call may still be reading `shared`.
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return warp_reduce(lane < warps ? shared[lane] : identity);
}

// The sum over a block; as BlockReduce.
template <class T>
__device__ T BlockSum(T v, T* shared) {
  return BlockReduce(v, shared, T(0), [](T x) { return WarpSum(x); });
}

// The maximum over a block; as BlockReduce.
__device__ __forceinline__ float BlockMax(float v, float* shared) {
  return BlockReduce(v, shared, -INFINITY, [](float x) { return WarpMax(x); });
}

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_REDUCE_CUH_
