#include "worker/data/tokenizer.h"

namespace kiln::data {

std::vector<uint16_t> ByteTokenizer::Encode(std::string_view text) const {
  std::vector<uint16_t> tokens;
  tokens.reserve(text.size());
  for (char c : text) tokens.push_back(static_cast<unsigned char>(c));
  return tokens;
}

StatusOr<std::string> ByteTokenizer::Decode(std::span<const uint16_t> tokens) const {
  std::string text;
  text.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    uint16_t t = tokens[i];
    if (t < kEot) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(t)));
    } else if (t == kEot) {
      text += eot_marker_;
    } else {
      return Status::InvalidArgument("token " + std::to_string(t) + " at index " +
                                     std::to_string(i) + " is outside the byte vocabulary of " +
                                     std::to_string(kVocabSize));
    }
  }
  return text;
}

}  // namespace kiln::data
