// worker/serve/cuda_decoder.h, over kernels/cuda only (no kernels of its
// own). One Forward: upload the rows' tokens,
// positions, cache slots and the slices' block tables; embed; per layer
// LayerNorm -> QKV GEMM -> append K,V to the cache -> paged attention ->
// projection -> fused residual + LayerNorm -> MLP -> fused residual +
// LayerNorm (the next layer's, or the final one); gather each slice's last
// row; logits GEMM in float; download.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <cublas_v2.h>

#include "kernels/cuda/blas.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/gather.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/paged_attention.h"
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

// Decode steps of up to this many sequences replay CUDA graphs.
constexpr int kMaxGraphRows = 64;

// Rows padded up to a graph's size: the next power of two.
int GraphRows(int n) {
  int b = 1;
  while (b < n) b *= 2;
  return b;
}

// Where one Forward's inputs and activations live on the device.
struct Buffers {
  Device<int32_t> token, pos, slice, slot, tables, last;
  Device<bf16> x, ln, qkv, atty, proj, fch, fcg, last_rows;
  Device<float> mean, rstd, logits;
  Device<float> attn_work;  // The attention's split partials.

  // Room for `n` rows, `s` slices with tables `width` wide.
  Status Reserve(const model::GptConfig& c, int n, int s, int width) {
    const auto N = static_cast<std::size_t>(n), S = static_cast<std::size_t>(s);
    const auto NC = N * static_cast<std::size_t>(c.channels);
    for (Device<int32_t>* d : {&token, &pos, &slice, &slot}) KILN_RETURN_IF_ERROR(d->Reserve(N));
    KILN_RETURN_IF_ERROR(tables.Reserve(S * static_cast<std::size_t>(width)));
    KILN_RETURN_IF_ERROR(last.Reserve(S));
    for (Device<bf16>* d : {&x, &ln, &atty, &proj}) KILN_RETURN_IF_ERROR(d->Reserve(NC));
    KILN_RETURN_IF_ERROR(qkv.Reserve(3 * NC));
    KILN_RETURN_IF_ERROR(fch.Reserve(4 * NC));
    KILN_RETURN_IF_ERROR(fcg.Reserve(4 * NC));
    KILN_RETURN_IF_ERROR(mean.Reserve(N));
    KILN_RETURN_IF_ERROR(rstd.Reserve(N));
    KILN_RETURN_IF_ERROR(last_rows.Reserve(S * static_cast<std::size_t>(c.channels)));
    const int64_t work =
        cuda::PagedAttentionWorkspaceFloats(n, c.channels, c.num_heads, c.max_seq_len);
    if (work > 0) KILN_RETURN_IF_ERROR(attn_work.Reserve(static_cast<std::size_t>(work)));
    return logits.Reserve(S * static_cast<std::size_t>(c.padded_vocab_size));
  }
};

// One call's rows on the host, before upload.
struct HostRows {
  std::vector<int32_t> token, pos, slice, slot, tables, last;
  int width = 1;
};

class CudaDecoder final : public Decoder {
 public:
  CudaDecoder(model::GptConfig config, int block_size, int num_blocks, int device, cuda::Blas blas,
              cudaStream_t stream, bool graphs)
      : config_(config),
        block_size_(block_size),
        num_blocks_(num_blocks),
        device_(device),
        blas_(std::move(blas)),
        stream_(stream),
        use_graphs_(graphs) {}
  ~CudaDecoder() override {
    cudaSetDevice(device_);
    for (cudaGraphExec_t& g : graphs_) {
      if (g != nullptr) cudaGraphExecDestroy(g);
    }
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
    KILN_RETURN_IF_ERROR(cuda::FloatToBf16(weights_.get(), staging.get(),
                                           static_cast<int64_t>(all.size()), stream_));
    // One block more than the engine hands out: graph padding rows write there.
    const int64_t per_layer =
        static_cast<int64_t>(num_blocks_ + 1) * 2 * block_size_ * config_.channels;
    layer_cache_elems_ = per_layer;
    KILN_RETURN_IF_ERROR(cache_.Reserve(static_cast<std::size_t>(per_layer) *
                                        static_cast<std::size_t>(config_.num_layers)));
    // cuBLAS inside a graph capture must not allocate: give it the workspace.
    KILN_CUBLAS_RETURN_IF_ERROR(
        cublasSetWorkspace(blas_.cublas(), blas_.workspace(), blas_.workspace_bytes()));
    KILN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

  std::string device() const override { return "cuda:" + std::to_string(device_); }
  int64_t graph_launches() const { return graph_launches_; }

  Status Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits) override {
    KILN_ASSIGN_OR_RETURN(DecodeRows rows, FlattenSlices(config_, block_size_, slices));
    KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    const int S = static_cast<int>(slices.size());
    // Graphs take decode steps whose block tables fit the context's width
    // (a longer table, whose extra blocks are never read, goes eager).
    const auto graph_width =
        static_cast<size_t>((config_.max_seq_len + block_size_ - 1) / block_size_);
    bool decode_only = S <= kMaxGraphRows;
    for (const SequenceSlice& sl : slices) {
      decode_only = decode_only && sl.tokens.size() == 1 && sl.blocks->size() <= graph_width;
    }
    if (use_graphs_ && decode_only) {
      Status s = ForwardGraph(slices, rows, logits);
      if (s.ok() || s.code() == StatusCode::kInvalidArgument) return s;
      // A graph that cannot be captured or launched: decode without graphs
      // from now on (the eager path computes the same).
      std::fprintf(stderr, "kiln cuda decoder: CUDA graphs off: %s\n", s.ToString().c_str());
      use_graphs_ = false;
      // Clears the error the failed capture left behind (reported just above)
      // so the eager path's checks do not report it again.
      (void)cudaGetLastError();
    }
    HostRows h;
    KILN_RETURN_IF_ERROR(Prepare(slices, rows, static_cast<int>(rows.token.size()), S, 0, h));
    const int N = static_cast<int>(h.token.size());
    KILN_RETURN_IF_ERROR(eager_.Reserve(config_, N, S, h.width));
    KILN_RETURN_IF_ERROR(UploadRows(eager_, h));
    KILN_RETURN_IF_ERROR(Enqueue(eager_, N, S, h.width));
    return Download(eager_, S, logits);
  }

 private:
  // Host arrays for `slices`, padded to `n_rows` rows and `n_slices` slices
  // (graph padding: a row of its own slice at position 0, writing to the
  // spare block), tables `min_width` wide at least.
  Status Prepare(std::span<const SequenceSlice> slices, const DecodeRows& rows, int n_rows,
                 int n_slices, int min_width, HostRows& h) {
    const int N = static_cast<int>(rows.token.size()), S = static_cast<int>(slices.size());
    h.width = std::max(1, min_width);
    for (const SequenceSlice& sl : slices) {
      h.width = std::max(h.width, static_cast<int>(sl.blocks->size()));
    }
    const auto width = static_cast<size_t>(h.width);
    h.token.assign(static_cast<size_t>(n_rows), 0);
    h.pos.assign(static_cast<size_t>(n_rows), 0);
    h.slice.assign(static_cast<size_t>(n_rows), 0);
    h.slot.assign(static_cast<size_t>(n_rows), num_blocks_ * block_size_);
    h.tables.assign(static_cast<size_t>(n_slices) * width, num_blocks_);
    h.last.assign(static_cast<size_t>(n_slices), 0);
    for (int s = 0, r = 0; s < S; ++s) {
      const auto& blocks = *slices[static_cast<size_t>(s)].blocks;
      for (size_t b = 0; b < blocks.size(); ++b) {
        if (blocks[b] < 0 || blocks[b] >= num_blocks_) {
          return Status::InvalidArgument("sequence " + std::to_string(s) + ": block " +
                                         std::to_string(blocks[b]) + " is outside the cache");
        }
        h.tables[static_cast<size_t>(s) * width + b] = blocks[b];
      }
      r += static_cast<int>(slices[static_cast<size_t>(s)].tokens.size());
      h.last[static_cast<size_t>(s)] = r - 1;
    }
    for (int r = 0; r < N; ++r) {
      const auto i = static_cast<size_t>(r);
      const int pos = rows.pos[i];
      const auto& blocks = *slices[static_cast<size_t>(rows.slice[i])].blocks;
      h.token[i] = rows.token[i];
      h.pos[i] = pos;
      h.slice[i] = rows.slice[i];
      h.slot[i] = blocks[static_cast<size_t>(pos / block_size_)] * block_size_ + pos % block_size_;
    }
    for (int r = N; r < n_rows; ++r) {  // Padding: one row per padding slice.
      h.slice[static_cast<size_t>(r)] = r;
      h.last[static_cast<size_t>(r)] = r;
    }
    return Status::Ok();
  }

  Status UploadRows(Buffers& b, const HostRows& h) {
    KILN_RETURN_IF_ERROR(Upload(b.token, h.token, stream_));
    KILN_RETURN_IF_ERROR(Upload(b.pos, h.pos, stream_));
    KILN_RETURN_IF_ERROR(Upload(b.slice, h.slice, stream_));
    KILN_RETURN_IF_ERROR(Upload(b.slot, h.slot, stream_));
    KILN_RETURN_IF_ERROR(Upload(b.tables, h.tables, stream_));
    return Upload(b.last, h.last, stream_);
  }

  Status Download(Buffers& b, int S, std::vector<float>& logits) {
    logits.resize(static_cast<std::size_t>(S) *
                  static_cast<std::size_t>(config_.padded_vocab_size));
    KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), b.logits.get(),
                                              logits.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                              stream_));
    KILN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

  // A decode step through the graph for its padded size, captured on first
  // use. The graph's buffers are allocated once, for kMaxGraphRows rows, so
  // the pointers it captured stay valid.
  Status ForwardGraph(std::span<const SequenceSlice> slices, const DecodeRows& rows,
                      std::vector<float>& logits) {
    const int S = static_cast<int>(slices.size()), G = GraphRows(S);
    const int width = (config_.max_seq_len + block_size_ - 1) / block_size_;
    HostRows h;
    // Forward sends only tables that fit `width`, so h.width == width.
    KILN_RETURN_IF_ERROR(Prepare(slices, rows, G, G, width, h));
    KILN_RETURN_IF_ERROR(graph_.Reserve(config_, kMaxGraphRows, kMaxGraphRows, width));
    KILN_RETURN_IF_ERROR(UploadRows(graph_, h));
    int slot = 0;
    while ((1 << slot) < G) ++slot;
    if (graphs_[slot] == nullptr) {
      KILN_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      Status enqueued = Enqueue(graph_, G, G, width);
      cudaGraph_t graph = nullptr;
      const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
      KILN_RETURN_IF_ERROR(enqueued);
      KILN_CUDA_RETURN_IF_ERROR(ended);
      const cudaError_t made = cudaGraphInstantiate(&graphs_[slot], graph, 0);
      cudaGraphDestroy(graph);
      KILN_CUDA_RETURN_IF_ERROR(made);
    }
    KILN_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graphs_[slot], stream_));
    ++graph_launches_;
    return Download(graph_, S, logits);
  }

  // The forward of N rows in S slices over buffers `b` (inputs uploaded).
  Status Enqueue(Buffers& b, int N, int S, int width) {
    const model::GptConfig& c = config_;
    const int C = c.channels, L = c.num_layers, NH = c.num_heads, Vp = c.padded_vocab_size;
    const auto NC = static_cast<int64_t>(N) * C;
    auto P = [this](Param p) { return weights_.get() + offset_[static_cast<int>(p)]; };
    KILN_RETURN_IF_ERROR(cuda::EmbedRows(b.x.get(), b.token.get(), b.pos.get(), P(Param::kWte),
                                         P(Param::kWpe), N, C, stream_));
    KILN_RETURN_IF_ERROR(cuda::LayerNormForward(b.ln.get(), b.mean.get(), b.rstd.get(), b.x.get(),
                                                P(Param::kLn1W), P(Param::kLn1B), N, C, stream_));
    for (int l = 0; l < L; ++l) {
      const int64_t lC = static_cast<int64_t>(l) * C;
      bf16* layer_cache = cache_.get() + l * layer_cache_elems_;
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, b.qkv.get(), b.ln.get(),
                                               P(Param::kQkvW) + lC * 3 * C,
                                               P(Param::kQkvB) + lC * 3, N, C, 3 * C, stream_));
      KILN_RETURN_IF_ERROR(
          cuda::AppendKv(layer_cache, b.qkv.get(), b.slot.get(), N, block_size_, C, stream_));
      KILN_RETURN_IF_ERROR(cuda::PagedAttentionForward(
          b.atty.get(), b.qkv.get(), layer_cache, b.slice.get(), b.pos.get(), b.tables.get(), width,
          N, block_size_, C, NH, c.max_seq_len, stream_, b.attn_work.get(),
          static_cast<int64_t>(b.attn_work.size())));
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, b.proj.get(), b.atty.get(),
                                               P(Param::kAttProjW) + lC * C,
                                               P(Param::kAttProjB) + lC, N, C, C, stream_));
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(
          b.x.get(), b.ln.get(), b.mean.get(), b.rstd.get(), b.x.get(), b.proj.get(),
          P(Param::kLn2W) + lC, P(Param::kLn2B) + lC, N, C, stream_));
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, b.fch.get(), b.ln.get(),
                                               P(Param::kFcW) + lC * 4 * C, P(Param::kFcB) + lC * 4,
                                               N, C, 4 * C, stream_));
      KILN_RETURN_IF_ERROR(cuda::GeluForward(b.fcg.get(), b.fch.get(), 4 * NC, stream_));
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(blas_, b.proj.get(), b.fcg.get(),
                                               P(Param::kFcProjW) + lC * 4 * C,
                                               P(Param::kFcProjB) + lC, N, 4 * C, C, stream_));
      // The residual, then the next layer's first LayerNorm or the final one.
      const bool last_layer = l + 1 == L;
      const bf16* w = last_layer ? P(Param::kLnfW) : P(Param::kLn1W) + lC + C;
      const bf16* bias = last_layer ? P(Param::kLnfB) : P(Param::kLn1B) + lC + C;
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(b.x.get(), b.ln.get(), b.mean.get(),
                                                          b.rstd.get(), b.x.get(), b.proj.get(), w,
                                                          bias, N, C, stream_));
    }
    KILN_RETURN_IF_ERROR(
        cuda::GatherRows(b.last_rows.get(), b.ln.get(), b.last.get(), S, C, stream_));
    // logits [S, Vp] (row-major) = last [S, C] x wte^T, in float: column-major
    // that is wte^T(Vp x C) x last^T(C x S) -> (Vp x S).
    const float alpha = 1.0f, beta = 0.0f;
    KILN_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_.cublas(), stream_));
    KILN_CUBLAS_RETURN_IF_ERROR(
        cublasGemmEx(blas_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, Vp, S, C, &alpha, P(Param::kWte),
                     CUDA_R_16BF, C, b.last_rows.get(), CUDA_R_16BF, C, &beta, b.logits.get(),
                     CUDA_R_32F, Vp, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return Status::Ok();
  }

  model::GptConfig config_;
  int block_size_, num_blocks_, device_;
  cuda::Blas blas_;
  cudaStream_t stream_;
  bool use_graphs_;
  int64_t offset_[kParamCount] = {};
  int64_t layer_cache_elems_ = 0;
  Device<bf16> weights_, cache_;
  Buffers eager_, graph_;
  cudaGraphExec_t graphs_[7] = {};  // By log2 of the padded rows: 1 .. 64.
  int64_t graph_launches_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<Decoder>> NewCudaDecoder(const model::Gpt<float>& model, int block_size,
                                                  int num_blocks, int device,
                                                  const CudaDecoderOptions& options) {
  const model::GptConfig& c = model.config();
  if (block_size < 1 || num_blocks < 1) {
    return Status::InvalidArgument("the KV cache needs a positive block size and block count");
  }
  if (Status s = cuda::PagedAttentionSupports(c.channels / c.num_heads, c.max_seq_len); !s.ok()) {
    return Status::InvalidArgument("the CUDA decoder cannot serve this model: " + s.message());
  }
  KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  KILN_ASSIGN_OR_RETURN(cuda::Blas blas, cuda::Blas::Create());
  cudaStream_t stream = nullptr;
  KILN_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  auto decoder = std::make_unique<CudaDecoder>(c, block_size, num_blocks, device, std::move(blas),
                                               stream, options.graphs);
  KILN_RETURN_IF_ERROR(decoder->Init(model));
  return std::unique_ptr<Decoder>(std::move(decoder));
}

int64_t CudaDecoderGraphLaunches(const Decoder& decoder) {
  const auto* cuda = dynamic_cast<const CudaDecoder*>(&decoder);
  return cuda != nullptr ? cuda->graph_launches() : 0;
}

}  // namespace kiln::serve
