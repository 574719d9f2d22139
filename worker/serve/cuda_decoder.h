// The serving decoder on one GPU: the CpuDecoder's math (worker/serve/
// decoder.h) in bf16 with float accumulation, over kernels/cuda: cuBLASLt
// GEMMs, LayerNorm and GELU as in training, the embedding of rows at
// arbitrary positions (encoder.h EmbedRows), the append of a call's keys and
// values to the paged cache and causal attention of each row over its
// sequence's pages (paged_attention.h), and the gather of each sequence's
// last row (gather.h).
// Weights are the checkpoint's, rounded once to bf16 on upload; the KV cache
// (bf16, [layers][blocks][K|V][block_size][C]) lives in device memory, by
// the block ids of the engine's PagedKvCache. Logits come back as floats
// (the last GEMM writes float). Built only with CUDA (KILN_HAVE_CUDA).
// Not thread-safe.
#ifndef KILN_WORKER_SERVE_CUDA_DECODER_H_
#define KILN_WORKER_SERVE_CUDA_DECODER_H_

#include <cstdint>
#include <memory>

#include "base/statusor.h"
#include "worker/model/gpt.h"
#include "worker/serve/decoder.h"

namespace kiln::serve {

struct CudaDecoderOptions {
  // Decode steps (every sequence one new token, at most 64 sequences) replay a
  // CUDA graph captured per padded batch size (1, 2, 4, ... 64): one launch
  // instead of about ten per layer. Padding rows compute on a spare cache
  // block and are dropped. A graph that fails to capture turns graphs off for
  // the decoder (said on stderr); results are the eager path's.
  bool graphs = true;
};

// A decoder of `model` (copied to the device; the host model may change or
// go afterwards) on CUDA device `device`, with room for `num_blocks` cache
// blocks of `block_size` positions. Unavailable, naming the CUDA error, when
// the device cannot hold it.
StatusOr<std::unique_ptr<Decoder>> NewCudaDecoder(const model::Gpt<float>& model, int block_size,
                                                  int num_blocks, int device,
                                                  const CudaDecoderOptions& options = {});

// How many decode steps `decoder` (from NewCudaDecoder) ran as graph
// launches; 0 for any other decoder. For tests and benchmarks.
int64_t CudaDecoderGraphLaunches(const Decoder& decoder);

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_CUDA_DECODER_H_
