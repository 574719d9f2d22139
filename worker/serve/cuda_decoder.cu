// worker/serve/cuda_decoder.h. One Forward: upload the rows' tokens,
// positions, cache slots and the slices' block tables; embed; per layer
// LayerNorm -> QKV GEMM -> append K,V to the cache -> paged attention ->
// projection -> fused residual + LayerNorm -> MLP -> fused residual +
// LayerNorm (the next layer's, or the final one); gather each slice's last
// row; logits GEMM in float; download.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <cublas_v2.h>

#include "kernels/cuda/blas.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/precision.h"
#include "kernels/cuda_check.h"
#include "worker/serve/cuda_decoder.h"

namespace kiln::serve {
namespace cuda = kernels::cuda;
using cuda::bf16;
using model::Param;

namespace {

constexpr int kParamCount = static_cast<int>(Param::kCount);

template <class T>
using Device = gpu::DeviceBuffer<T>;

// Copies `host` into `buffer` (grown as needed) on `stream`.
template <class T>
Status Upload(Device<T>& buffer, const std::vector<T>& host, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(buffer.Reserve(std::max<std::size_t>(host.size(), 1)));
  KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buffer.get(), host.data(), host.size() * sizeof(T),
                                            cudaMemcpyHostToDevice, stream));
  return Status::Ok();
}

__global__ void ToBf16Kernel(bf16* out, const float* in, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}

// x[r] = wte[token[r]] + wpe[pos[r]]; one block per row.
__global__ void EmbedRowsKernel(bf16* x, const int32_t* token, const int32_t* pos, const bf16* wte,
                                const bf16* wpe, int C) {
  const int r = blockIdx.x;
  const bf16* te = wte + static_cast<int64_t>(token[r]) * C;
  const bf16* pe = wpe + static_cast<int64_t>(pos[r]) * C;
  bf16* out = x + static_cast<int64_t>(r) * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    out[i] = __float2bfloat16_rn(__bfloat162float(te[i]) + __bfloat162float(pe[i]));
  }
}

// The rows' keys and values (columns C..3C of qkv) into their cache slots
// (block * block_size + offset) of one layer; one block per row.
__global__ void AppendKvKernel(bf16* layer_cache, const bf16* qkv, const int32_t* slot,
                               int block_size, int C) {
  const int r = blockIdx.x;
  const int64_t s = slot[r];
  const int64_t block = s / block_size, offset = s % block_size;
  bf16* k = layer_cache + ((block * 2 + 0) * block_size + offset) * C;
  bf16* v = layer_cache + ((block * 2 + 1) * block_size + offset) * C;
  const bf16* src = qkv + static_cast<int64_t>(r) * 3 * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    k[i] = src[C + i];
    v[i] = src[2 * C + i];
  }
}

// Causal attention of row r, head h over its sequence's positions 0..pos[r],
// read from the cache through the slice's block table (tables[slice[r]],
// `table_width` entries). One block of 128 threads per (row, head): scores
// into shared memory, the softmax by block reductions, then each thread
// sums its output dimensions over the positions. Out: [N, C] bf16.
constexpr int kAttnThreads = 128;

__device__ float BlockReduce(float v, float* scratch, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kAttnThreads / 32; ++w) r = is_max ? fmaxf(r, scratch[w]) : r + scratch[w];
  return r;
}

__global__ void PagedAttentionKernel(bf16* out, const bf16* qkv, const bf16* layer_cache,
                                     const int32_t* row_slice, const int32_t* row_pos,
                                     const int32_t* tables, int table_width, int block_size, int C,
                                     int NH, float scale) {
  extern __shared__ float scores[];  // [max positions]
  __shared__ float scratch[kAttnThreads / 32];
  const int r = blockIdx.x, h = blockIdx.y, hs = C / NH;
  const int pos = row_pos[r];
  const int32_t* table = tables + static_cast<int64_t>(row_slice[r]) * table_width;
  const bf16* q = qkv + static_cast<int64_t>(r) * 3 * C + h * hs;
  auto row = [&](int t, int kv) {
    const int64_t block = table[t / block_size];
    return layer_cache + ((block * 2 + kv) * block_size + t % block_size) * C + h * hs;
  };
  float local_max = -INFINITY;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
    const bf16* k = row(t, 0);
    float dot = 0;
    for (int i = 0; i < hs; ++i) dot += __bfloat162float(q[i]) * __bfloat162float(k[i]);
    dot *= scale;
    scores[t] = dot;
    local_max = fmaxf(local_max, dot);
  }
  const float max = BlockReduce(local_max, scratch, true);
  float local_sum = 0;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
    const float e = __expf(scores[t] - max);
    scores[t] = e;
    local_sum += e;
  }
  const float inv = 1.0f / BlockReduce(local_sum, scratch, false);
  __syncthreads();
  bf16* y = out + static_cast<int64_t>(r) * C + h * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float acc = 0;
    for (int t = 0; t <= pos; ++t) acc += scores[t] * __bfloat162float(row(t, 1)[i]);
    y[i] = __float2bfloat16_rn(acc * inv);
  }
}

// out[s] = in[rows[s]]; one block per output row.
__global__ void GatherRowsKernel(bf16* out, const bf16* in, const int32_t* rows, int C) {
  const int s = blockIdx.x;
  const bf16* src = in + static_cast<int64_t>(rows[s]) * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) out[static_cast<int64_t>(s) * C + i] = src[i];
}

class CudaDecoder final : public Decoder {
 public:
  CudaDecoder(model::GptConfig config, int block_size, int num_blocks, int device, cuda::Blas blas,
              cudaStream_t stream)
      : config_(config),
        block_size_(block_size),
        num_blocks_(num_blocks),
        device_(device),
        blas_(std::move(blas)),
        stream_(stream) {}
  ~CudaDecoder() override {
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status Init(const model::Gpt<float>& model) {
    const std::span<const float> all = model.params();
    for (int p = 0; p < kParamCount; ++p) offset_[p] = model.offset(static_cast<Param>(p));
    Device<float> staging;
    KILN_RETURN_IF_ERROR(staging.Reserve(all.size()));
    KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging.get(), all.data(), all.size_bytes(),
                                              cudaMemcpyHostToDevice, stream_));
    KILN_RETURN_IF_ERROR(weights_.Reserve(all.size()));
    const auto n = static_cast<int64_t>(all.size());
    ToBf16Kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream_>>>(weights_.get(),
                                                                              staging.get(), n);
    KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    const int64_t per_layer =
        static_cast<int64_t>(num_blocks_) * 2 * block_size_ * config_.channels;
    layer_cache_elems_ = per_layer;
    KILN_RETURN_IF_ERROR(cache_.Reserve(static_cast<std::size_t>(per_layer) *
                                        static_cast<std::size_t>(config_.num_layers)));
    KILN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

  std::string device() const override { return "cuda:" + std::to_string(device_); }

  Status Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits) override {
    const model::GptConfig& c = config_;
    const int C = c.channels, L = c.num_layers, NH = c.num_heads, Vp = c.padded_vocab_size;
    KILN_ASSIGN_OR_RETURN(DecodeRows rows, FlattenSlices(c, block_size_, slices));
    KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    const int N = static_cast<int>(rows.token.size()), S = static_cast<int>(slices.size());
    // Per row: its cache slot; per slice: its block table (padded) and last row.
    int width = 1;
    for (const SequenceSlice& sl : slices) {
      width = std::max(width, static_cast<int>(sl.blocks->size()));
    }
    std::vector<int32_t> slot(static_cast<size_t>(N)), tables(static_cast<size_t>(S) * width, 0),
        last(static_cast<size_t>(S));
    for (int s = 0, r = 0; s < S; ++s) {
      const auto& blocks = *slices[static_cast<size_t>(s)].blocks;
      for (size_t b = 0; b < blocks.size(); ++b) {
        if (blocks[b] < 0 || blocks[b] >= num_blocks_) {
          return Status::InvalidArgument("sequence " + std::to_string(s) + ": block " +
                                         std::to_string(blocks[b]) + " is outside the cache");
        }
        tables[static_cast<size_t>(s) * width + b] = blocks[b];
      }
      r += static_cast<int>(slices[static_cast<size_t>(s)].tokens.size());
      last[static_cast<size_t>(s)] = r - 1;
    }
    for (int r = 0; r < N; ++r) {
      const int pos = rows.pos[static_cast<size_t>(r)];
      const auto& blocks = *slices[static_cast<size_t>(rows.slice[static_cast<size_t>(r)])].blocks;
      slot[static_cast<size_t>(r)] =
          blocks[static_cast<size_t>(pos / block_size_)] * block_size_ + pos % block_size_;
    }
    std::vector<int32_t> row_slice(rows.slice.begin(), rows.slice.end()),
        row_pos(rows.pos.begin(), rows.pos.end());
    KILN_RETURN_IF_ERROR(Upload(d_token_, rows.token, stream_));
    KILN_RETURN_IF_ERROR(Upload(d_pos_, row_pos, stream_));
    KILN_RETURN_IF_ERROR(Upload(d_slice_, row_slice, stream_));
    KILN_RETURN_IF_ERROR(Upload(d_slot_, slot, stream_));
    KILN_RETURN_IF_ERROR(Upload(d_tables_, tables, stream_));
    KILN_RETURN_IF_ERROR(Upload(d_last_, last, stream_));

    const auto NC = static_cast<std::size_t>(N) * static_cast<std::size_t>(C);
    KILN_RETURN_IF_ERROR(x_.Reserve(NC));
    KILN_RETURN_IF_ERROR(ln_.Reserve(NC));
    KILN_RETURN_IF_ERROR(qkv_.Reserve(3 * NC));
    KILN_RETURN_IF_ERROR(atty_.Reserve(NC));
    KILN_RETURN_IF_ERROR(proj_.Reserve(NC));
    KILN_RETURN_IF_ERROR(fch_.Reserve(4 * NC));
    KILN_RETURN_IF_ERROR(fcg_.Reserve(4 * NC));
    KILN_RETURN_IF_ERROR(mean_.Reserve(static_cast<std::size_t>(N)));
    KILN_RETURN_IF_ERROR(rstd_.Reserve(static_cast<std::size_t>(N)));
    KILN_RETURN_IF_ERROR(last_.Reserve(static_cast<std::size_t>(S) * C));
    KILN_RETURN_IF_ERROR(logits_.Reserve(static_cast<std::size_t>(S) * Vp));

    auto P = [this](Param p) { return weights_.get() + offset_[static_cast<int>(p)]; };
    const int threads = std::min(256, ((C + 31) / 32) * 32);
    EmbedRowsKernel<<<static_cast<unsigned>(N), static_cast<unsigned>(threads), 0, stream_>>>(
        x_.get(), d_token_.get(), d_pos_.get(), P(Param::kWte), P(Param::kWpe), C);
    KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    KILN_RETURN_IF_ERROR(cuda::LayerNormForward(ln_.get(), mean_.get(), rstd_.get(), x_.get(),
                                                P(Param::kLn1W), P(Param::kLn1B), N, C, stream_));
    const float scale = 1.0f / std::sqrt(static_cast<float>(C / NH));
    const std::size_t shared = static_cast<std::size_t>(c.max_seq_len) * sizeof(float);
    for (int l = 0; l < L; ++l) {
      const int64_t lC = static_cast<int64_t>(l) * C;
      bf16* layer_cache = cache_.get() + l * layer_cache_elems_;
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, qkv_.get(), ln_.get(),
                                               P(Param::kQkvW) + lC * 3 * C,
                                               P(Param::kQkvB) + lC * 3, N, C, 3 * C, stream_));
      AppendKvKernel<<<static_cast<unsigned>(N), static_cast<unsigned>(threads), 0, stream_>>>(
          layer_cache, qkv_.get(), d_slot_.get(), block_size_, C);
      KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      PagedAttentionKernel<<<dim3(static_cast<unsigned>(N), static_cast<unsigned>(NH)),
                             kAttnThreads, shared, stream_>>>(
          atty_.get(), qkv_.get(), layer_cache, d_slice_.get(), d_pos_.get(), d_tables_.get(),
          width, block_size_, C, NH, scale);
      KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, proj_.get(), atty_.get(),
                                               P(Param::kAttProjW) + lC * C,
                                               P(Param::kAttProjB) + lC, N, C, C, stream_));
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(
          x_.get(), ln_.get(), mean_.get(), rstd_.get(), x_.get(), proj_.get(),
          P(Param::kLn2W) + lC, P(Param::kLn2B) + lC, N, C, stream_));
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, fch_.get(), ln_.get(),
                                               P(Param::kFcW) + lC * 4 * C, P(Param::kFcB) + lC * 4,
                                               N, C, 4 * C, stream_));
      KILN_RETURN_IF_ERROR(
          cuda::GeluForward(fcg_.get(), fch_.get(), static_cast<int64_t>(4 * NC), stream_));
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, proj_.get(), fcg_.get(),
                                               P(Param::kFcProjW) + lC * 4 * C,
                                               P(Param::kFcProjB) + lC, N, 4 * C, C, stream_));
      // The residual, then the next layer's first LayerNorm or the final one.
      const bool last_layer = l + 1 == L;
      const bf16* w = last_layer ? P(Param::kLnfW) : P(Param::kLn1W) + lC + C;
      const bf16* b = last_layer ? P(Param::kLnfB) : P(Param::kLn1B) + lC + C;
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(x_.get(), ln_.get(), mean_.get(),
                                                          rstd_.get(), x_.get(), proj_.get(), w, b,
                                                          N, C, stream_));
    }
    GatherRowsKernel<<<static_cast<unsigned>(S), static_cast<unsigned>(threads), 0, stream_>>>(
        last_.get(), ln_.get(), d_last_.get(), C);
    KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    // logits [S, Vp] (row-major) = last [S, C] x wte^T, in float: column-major
    // that is wte^T(Vp x C) x last^T(C x S) -> (Vp x S).
    const float alpha = 1.0f, beta = 0.0f;
    KILN_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_.cublas(), stream_));
    KILN_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(blas_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, Vp, S, C,
                                             &alpha, P(Param::kWte), CUDA_R_16BF, C, last_.get(),
                                             CUDA_R_16BF, C, &beta, logits_.get(), CUDA_R_32F, Vp,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    logits.resize(static_cast<std::size_t>(S) * static_cast<std::size_t>(Vp));
    KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), logits_.get(),
                                              logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                              stream_));
    KILN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

 private:
  model::GptConfig config_;
  int block_size_, num_blocks_, device_;
  cuda::Blas blas_;
  cudaStream_t stream_;
  int64_t offset_[kParamCount] = {};
  int64_t layer_cache_elems_ = 0;
  Device<bf16> weights_, cache_;
  Device<bf16> x_, ln_, qkv_, atty_, proj_, fch_, fcg_, last_;
  Device<float> mean_, rstd_, logits_;
  Device<int32_t> d_token_, d_pos_, d_slice_, d_slot_, d_tables_, d_last_;
};

}  // namespace

StatusOr<std::unique_ptr<Decoder>> NewCudaDecoder(const model::Gpt<float>& model, int block_size,
                                                  int num_blocks, int device) {
  const model::GptConfig& c = model.config();
  if (block_size < 1 || num_blocks < 1) {
    return Status::InvalidArgument("the KV cache needs a positive block size and block count");
  }
  if (c.max_seq_len * sizeof(float) > 48 * 1024) {
    return Status::InvalidArgument(
        "the CUDA decoder's attention holds a row's scores in 48 KiB "
        "of shared memory: context length " +
        std::to_string(c.max_seq_len) + " is over 12288");
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  KILN_ASSIGN_OR_RETURN(cuda::Blas blas, cuda::Blas::Create());
  cudaStream_t stream = nullptr;
  KILN_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  auto decoder =
      std::make_unique<CudaDecoder>(c, block_size, num_blocks, device, std::move(blas), stream);
  KILN_RETURN_IF_ERROR(decoder->Init(model));
  return std::unique_ptr<Decoder>(std::move(decoder));
}

}  // namespace kiln::serve
