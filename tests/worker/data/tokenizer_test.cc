#include "worker/data/tokenizer.h"

#include <catch2/catch.hpp>

namespace kiln::data {
namespace {

TEST_CASE("byte tokenizer round-trips every byte value", "[data][tokenizer]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  all += std::string("\x00\xff\x00", 3);
  ByteTokenizer tok;
  std::vector<uint16_t> tokens = tok.Encode(all);
  REQUIRE(tokens.size() == all.size());
  CHECK(tokens[0] == 0);
  CHECK(tokens[255] == 255);
  CHECK(tokens[256] == 0);
  CHECK(tokens[257] == 0xff);
  for (std::size_t i = 0; i < 256; ++i) CHECK(tokens[i] == i);
  auto decoded = tok.Decode(tokens);
  REQUIRE(decoded.ok());
  CHECK(*decoded == all);
}

TEST_CASE("byte tokenizer has 257 tokens with end-of-text last", "[data][tokenizer]") {
  CHECK(ByteTokenizer::kVocabSize == 257);
  CHECK(ByteTokenizer::kEot == 256);
  ByteTokenizer tok;
  CHECK(tok.Encode("").empty());
  CHECK(tok.Encode("a%\n").size() == 3);
  for (uint16_t t : tok.Encode(std::string(1000, '\xff'))) CHECK(t < ByteTokenizer::kEot);
}

TEST_CASE("end-of-text decodes to nothing or the chosen marker", "[data][tokenizer]") {
  std::vector<uint16_t> tokens = ByteTokenizer().Encode("one");
  tokens.push_back(ByteTokenizer::kEot);
  for (uint16_t t : ByteTokenizer().Encode("two")) tokens.push_back(t);
  tokens.push_back(ByteTokenizer::kEot);

  auto plain = ByteTokenizer().Decode(tokens);
  REQUIRE(plain.ok());
  CHECK(*plain == "onetwo");
  auto marked = ByteTokenizer("<|endoftext|>").Decode(tokens);
  REQUIRE(marked.ok());
  CHECK(*marked == "one<|endoftext|>two<|endoftext|>");
}

TEST_CASE("decoding a token outside the vocabulary names it", "[data][tokenizer]") {
  std::vector<uint16_t> tokens = {'a', 256, 257, 'b'};
  auto decoded = ByteTokenizer().Decode(tokens);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == StatusCode::kInvalidArgument);
  CHECK(decoded.status().message() == "token 257 at index 2 is outside the byte vocabulary of 257");
}

}  // namespace
}  // namespace kiln::data
