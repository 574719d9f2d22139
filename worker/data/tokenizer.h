// ByteTokenizer: the default vocabulary of the training engine. Tokens 0..255
// are the bytes of the text; token 256 is end-of-text (EOT), which separates
// documents in a token stream. Nothing has to be downloaded, any byte sequence
// (UTF-8 or not) encodes losslessly, and the vocabulary has 257 entries.
// Immutable after construction; thread-safe.
#ifndef KILN_WORKER_DATA_TOKENIZER_H_
#define KILN_WORKER_DATA_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/statusor.h"

namespace kiln::data {

class ByteTokenizer {
 public:
  static constexpr uint16_t kEot = 256;
  static constexpr int kVocabSize = 257;

  // `eot_marker` is the text Decode writes for each EOT token; by default
  // nothing, so decoding a stream of documents concatenates their text.
  explicit ByteTokenizer(std::string eot_marker = "") : eot_marker_(std::move(eot_marker)) {}

  // One token per byte of `text`, in order. Never emits EOT: callers append it
  // after each document.
  std::vector<uint16_t> Encode(std::string_view text) const;

  // The bytes the tokens stand for, with the EOT marker for each EOT.
  // InvalidArgument naming the first token outside the vocabulary (>= 257).
  StatusOr<std::string> Decode(std::span<const uint16_t> tokens) const;

 private:
  std::string eot_marker_;
};

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_TOKENIZER_H_
