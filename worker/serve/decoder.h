// Decoder: the GPT's forward pass for serving, on the CPU (CpuDecoder) or a
// GPU (worker/serve/cuda_decoder.h). Each call runs a batch of
// slices — a prompt chunk (prefill) or the one newest token (decode) of
// several sequences at once — appends their keys and values to the paged KV
// cache, and returns the logits of each slice's last token. The weights are
// the training model's (worker/model/gpt.h), so any kiln checkpoint serves.
// The math is the training forward's: decoding with the cache gives the
// logits of a full recomputation (tests/worker/serve/decoder_test.cc).
// Not thread-safe; the CPU kernels use all cores.
#ifndef KILN_WORKER_SERVE_DECODER_H_
#define KILN_WORKER_SERVE_DECODER_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/statusor.h"
#include "worker/model/gpt.h"
#include "worker/serve/kv_cache.h"

namespace kiln::serve {

struct SequenceSlice {
  std::span<const int32_t> tokens;           // New tokens, at positions [start, start + size).
  int start = 0;                             // Positions before it are already in the cache.
  const std::vector<int>* blocks = nullptr;  // Block table covering start + size positions.
};

// The rows of one Forward call, flattened: for each new token, its slice,
// position and token id. Slices are validated on the way.
struct DecodeRows {
  std::vector<int> slice, pos;
  std::vector<int32_t> token;
};
// InvalidArgument for an empty call or slice, a position beyond the context,
// a token outside the vocabulary, or a block table too short.
StatusOr<DecodeRows> FlattenSlices(const model::GptConfig& config, int block_size,
                                   std::span<const SequenceSlice> slices);

class Decoder {
 public:
  virtual ~Decoder() = default;
  // InvalidArgument as FlattenSlices. On success `logits` holds
  // [slices, padded vocab] floats.
  virtual Status Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits) = 0;
  // "cpu", or "cuda:N".
  virtual std::string device() const = 0;
};

// How the CPU decoder holds the weight matrices it multiplies by: float (the
// training forward's math exactly) or bf16 (kernels/cpu/matmul_bf16.h: half
// the bytes a memory-bound decode step streams; the embeddings, biases,
// LayerNorms and all arithmetic stay float).
enum class CpuWeights { kFloat, kBf16 };

// The decoder on the CPU kernels, over the cache's host storage.
class CpuDecoder final : public Decoder {
 public:
  // `model` and `cache` must outlive the decoder; the cache's shape must
  // match the model's. With kBf16 the decoder keeps its own bf16 copy of the
  // matrices, taken now.
  CpuDecoder(model::Gpt<float>& model, PagedKvCache& cache,
             CpuWeights weights = CpuWeights::kFloat);

  Status Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits) override;
  std::string device() const override { return "cpu"; }

 private:
  // out = in x the matrix `p` of layer `l` (the classifier for kWte) + bias.
  void Matmul(float* out, const float* in, model::Param p, int layer, const float* bias, int N,
              int C, int OC);

  model::Gpt<float>& model_;
  PagedKvCache& cache_;
  // With CpuWeights::kBf16: the matrices, each in its Param layout; else empty.
  std::vector<uint16_t> bf16_[static_cast<int>(model::Param::kCount)];
  // Activations for the rows of one call, grown as needed.
  std::vector<float> x_, ln_, mean_, rstd_, qkv_, atty_, proj_, fch_, last_;
  // The call's flattened block tables, cache slots and last rows.
  std::vector<int32_t> tables_, slot_, last_rows_;
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_DECODER_H_
