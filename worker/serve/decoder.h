// Decoder: the GPT's forward pass for serving. Each call runs a batch of
// slices — a prompt chunk (prefill) or the one newest token (decode) of
// several sequences at once — appends their keys and values to the paged KV
// cache, and returns the logits of each slice's last token. The weights are
// the training model's (worker/model/gpt.h), so any kiln checkpoint serves.
// The math is the training forward's: decoding with the cache gives the
// logits of a full recomputation (tests/worker/serve/decoder_test.cc).
// Not thread-safe; the kernels use all cores.
#ifndef KILN_WORKER_SERVE_DECODER_H_
#define KILN_WORKER_SERVE_DECODER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "worker/model/gpt.h"
#include "worker/serve/kv_cache.h"

namespace kiln::serve {

struct SequenceSlice {
  std::span<const int32_t> tokens;           // New tokens, at positions [start, start + size).
  int start = 0;                             // Positions before it are already in the cache.
  const std::vector<int>* blocks = nullptr;  // Block table covering start + size positions.
};

class Decoder {
 public:
  // `model` and `cache` must outlive the decoder; the cache's shape must
  // match the model's.
  Decoder(model::Gpt<float>& model, PagedKvCache& cache);

  // InvalidArgument for an empty slice, a position beyond the context, a
  // token outside the vocabulary, or a block table too short. On success
  // `logits` holds [slices, padded vocab] floats.
  Status Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits);

  const model::GptConfig& config() const { return model_.config(); }

 private:
  // Causal attention of each row over its sequence's cached positions <= its own.
  void Attention(float* out, const float* qkv, std::span<const SequenceSlice> slices,
                 const std::vector<int>& row_slice, const std::vector<int>& row_pos, int layer);

  model::Gpt<float>& model_;
  PagedKvCache& cache_;
  // Activations for the rows of one call, grown as needed.
  std::vector<float> x_, ln_, mean_, rstd_, qkv_, atty_, proj_, fch_, last_;
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_DECODER_H_
