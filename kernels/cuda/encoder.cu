// kernels/cuda/encoder.h: embedding gather, and its backward as a sort of the
// positions by token followed by per-token row sums.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/encoder.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per kVec channels of one row; row n is at position pos[n], or
// n % T without positions.
template <int kVec>
__global__ void EncoderForwardKernel(bf16* out, const int32_t* inp, const int32_t* pos,
                                     const bf16* wte, const bf16* wpe, int N, int T, int C) {
  const int vectors_per_row = C / kVec;
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(N) * vectors_per_row) return;
  const int n = static_cast<int>(idx / vectors_per_row);
  const int c = static_cast<int>(idx % vectors_per_row) * kVec;
  const int t = pos != nullptr ? pos[n] : n % T;
  float e[kVec], p[kVec];
  LoadBf16(e, wte + static_cast<int64_t>(inp[n]) * C + c);
  LoadBf16(p, wpe + static_cast<int64_t>(t) * C + c);
#pragma unroll
  for (int k = 0; k < kVec; ++k) e[k] += p[k];
  StoreBf16(out + static_cast<int64_t>(n) * C + c, e);
}

__global__ void IotaKernel(int32_t* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = i;
}

// One block per entry of the sorted tokens; only the first entry of each run
// of equal tokens works: its threads split the channels and each sums the
// run's rows in position order (the sort is stable).
__global__ void TokenGradKernel(float* dwte, const bf16* dout, const int32_t* sorted_tokens,
                                const int32_t* sorted_positions, int N, int C) {
  const int first = blockIdx.x;
  const int32_t token = sorted_tokens[first];
  if (first > 0 && sorted_tokens[first - 1] == token) return;
  int end = first + 1;
  while (end < N && sorted_tokens[end] == token) ++end;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float sum = 0.0f;
    for (int i = first; i < end; ++i) {
      sum += __bfloat162float(dout[static_cast<int64_t>(sorted_positions[i]) * C + c]);
    }
    dwte[static_cast<int64_t>(token) * C + c] += sum;
  }
}

// One thread per (t, c), summing over the batch in order.
__global__ void PositionGradKernel(float* dwpe, const bf16* dout, int B, int T, int C) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t TC = static_cast<int64_t>(T) * C;
  if (idx >= TC) return;
  float sum = 0.0f;
  for (int b = 0; b < B; ++b) sum += __bfloat162float(dout[b * TC + idx]);
  dwpe[idx] += sum;
}

constexpr std::size_t kScratchAlign = 256;

constexpr std::size_t AlignUp(std::size_t n) {
  return (n + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
}

// The scratch regions: sorted tokens, positions 0..N-1, sorted positions, then
// CUB's temporary storage.
struct ScratchLayout {
  std::size_t index_bytes = 0;  // One region of N int32, aligned.
  std::size_t cub_offset = 0;
  std::size_t cub_bytes = 0;
  std::size_t total = 0;
};

StatusOr<ScratchLayout> Layout(int N) {
  ScratchLayout l;
  l.index_bytes = AlignUp(static_cast<std::size_t>(N) * sizeof(int32_t));
  // With null storage, CUB only reports the bytes it needs.
  KILN_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, l.cub_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), N));
  l.cub_offset = 3 * l.index_bytes;
  l.total = l.cub_offset + AlignUp(l.cub_bytes);
  return l;
}

Status CheckShape(const char* op, int B, int T, int C) {
  if (B <= 0 || T <= 0 || C <= 0) return ShapeError(op, "B, T and C must be positive");
  if (static_cast<int64_t>(B) * T > INT32_MAX) return ShapeError(op, "B * T must fit in int32");
  return Status::Ok();
}

// Rows n < N: token inp[n] at position pos[n] (or n % T when pos is null).
Status LaunchEncoderForward(bf16* out, const int32_t* inp, const int32_t* pos, const bf16* wte,
                            const bf16* wpe, int N, int T, int C, cudaStream_t stream) {
  const bool vector = C % kBf16PerVector == 0 && Aligned16(out) && Aligned16(wte) && Aligned16(wpe);
  const int vec = vector ? kBf16PerVector : 1;
  const auto blocks = static_cast<unsigned>(CeilDiv(static_cast<int64_t>(N) * (C / vec), kThreads));
  if (vector) {
    EncoderForwardKernel<kBf16PerVector>
        <<<blocks, kThreads, 0, stream>>>(out, inp, pos, wte, wpe, N, T, C);
  } else {
    EncoderForwardKernel<1><<<blocks, kThreads, 0, stream>>>(out, inp, pos, wte, wpe, N, T, C);
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace

Status EncoderForward(bf16* out, const int32_t* inp, const bf16* wte, const bf16* wpe, int B, int T,
                      int C, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("EncoderForward", B, T, C));
  return LaunchEncoderForward(out, inp, nullptr, wte, wpe, B * T, T, C, stream);
}

Status EmbedRows(bf16* out, const int32_t* token, const int32_t* pos, const bf16* wte,
                 const bf16* wpe, int N, int C, cudaStream_t stream) {
  if (N <= 0 || C <= 0) return ShapeError("EmbedRows", "N and C must be positive");
  if (pos == nullptr) return ShapeError("EmbedRows", "positions are required");
  return LaunchEncoderForward(out, token, pos, wte, wpe, N, 1, C, stream);
}

StatusOr<std::size_t> EncoderBackwardScratchBytes(int B, int T) {
  KILN_RETURN_IF_ERROR(CheckShape("EncoderBackwardScratchBytes", B, T, 1));
  KILN_ASSIGN_OR_RETURN(ScratchLayout l, Layout(B * T));
  return l.total;
}

Status EncoderBackward(float* dwte, float* dwpe, const bf16* dout, const int32_t* inp, int B, int T,
                       int C, void* scratch, std::size_t scratch_bytes, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("EncoderBackward", B, T, C));
  const int N = B * T;
  KILN_ASSIGN_OR_RETURN(ScratchLayout l, Layout(N));
  if (scratch == nullptr || scratch_bytes < l.total) {
    return ShapeError("EncoderBackward", "scratch holds " + std::to_string(scratch_bytes) +
                                             " bytes, needs " + std::to_string(l.total));
  }
  char* base = static_cast<char*>(scratch);
  auto* sorted_tokens = reinterpret_cast<int32_t*>(base);
  auto* positions = reinterpret_cast<int32_t*>(base + l.index_bytes);
  auto* sorted_positions = reinterpret_cast<int32_t*>(base + 2 * l.index_bytes);
  std::size_t cub_bytes = l.cub_bytes;

  IotaKernel<<<static_cast<unsigned>(CeilDiv(N, kThreads)), kThreads, 0, stream>>>(positions, N);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  KILN_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      base + l.cub_offset, cub_bytes, inp, sorted_tokens, positions, sorted_positions, N, 0,
      static_cast<int>(sizeof(int32_t) * 8), stream));
  TokenGradKernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(dwte, dout, sorted_tokens,
                                                                     sorted_positions, N, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const auto blocks = static_cast<unsigned>(CeilDiv(static_cast<int64_t>(T) * C, kThreads));
  PositionGradKernel<<<blocks, kThreads, 0, stream>>>(dwpe, dout, B, T, C);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
