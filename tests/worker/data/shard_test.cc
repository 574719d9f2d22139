#include "worker/data/shard.h"

#include <algorithm>
#include <filesystem>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "tests/support/temp_dir.h"

namespace kiln::data {
namespace {

// A shard built byte by byte, independently of WriteShard.
std::string RawShard(int32_t magic, int32_t version, int32_t count,
                     const std::vector<uint16_t>& tokens) {
  std::string bytes(1024, '\0');
  auto put = [&](std::size_t at, uint32_t v) {
    for (std::size_t b = 0; b < 4; ++b) bytes[at + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  };
  put(0, static_cast<uint32_t>(magic));
  put(4, static_cast<uint32_t>(version));
  put(8, static_cast<uint32_t>(count));
  for (uint16_t t : tokens) {
    bytes.push_back(static_cast<char>(t & 0xff));
    bytes.push_back(static_cast<char>(t >> 8));
  }
  return bytes;
}

std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST_CASE("shards round-trip tokens in llm.c's byte layout", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.path() + "/a.bin";
  std::vector<uint16_t> tokens = {0, 1, 255, 256, 0x1234, 65535};
  REQUIRE(WriteShard(path, tokens).ok());

  auto bytes = ReadFile(path);
  REQUIRE(bytes.ok());
  CHECK(*bytes == RawShard(20240520, 1, 6, tokens));
  CHECK(bytes->size() == 1024 + 2 * tokens.size());
  CHECK(bytes->substr(1024, 2) == std::string("\x00\x00", 2));
  CHECK(bytes->substr(1024 + 8, 2) == std::string("\x34\x12", 2));

  auto count = ShardTokenCount(path);
  REQUIRE(count.ok());
  CHECK(*count == 6);
  auto read = ReadShard(path);
  REQUIRE(read.ok());
  CHECK(*read == tokens);
}

TEST_CASE("an empty shard is a bare header", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.path() + "/empty.bin";
  REQUIRE(WriteShard(path, {}).ok());
  CHECK(std::filesystem::file_size(path) == 1024);
  auto read = ReadShard(path);
  REQUIRE(read.ok());
  CHECK(read->empty());
}

TEST_CASE("shards written by hand in the format are read", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.Write("hand.bin", RawShard(20240520, 1, 3, {7, 300, 9}));
  auto read = ReadShard(path);
  REQUIRE(read.ok());
  CHECK(*read == std::vector<uint16_t>{7, 300, 9});
}

TEST_CASE("malformed shards fail naming the file and the fault", "[data][shard]") {
  testing::TempDir dir;
  struct Case {
    const char* name;
    std::string bytes;
    StatusCode code;
    std::string message;
  };
  std::string good = RawShard(20240520, 1, 4, {1, 2, 3, 4});
  std::vector<Case> cases = {
      {"magic.bin", RawShard(0x1234abcd, 1, 4, {1, 2, 3, 4}), StatusCode::kInvalidArgument,
       "bad magic 0x1234abcd, want 20240520"},
      {"text.bin", "hello, this is not a shard\n", StatusCode::kInvalidArgument,
       "bad magic 0x6c6c6568, want 20240520"},
      {"version.bin", RawShard(20240520, 2, 4, {1, 2, 3, 4}), StatusCode::kInvalidArgument,
       "unsupported version 2, want 1"},
      {"truncated.bin", RawShard(20240520, 1, 10, {1, 2, 3, 4, 5}), StatusCode::kDataLoss,
       "truncated: header says 10 tokens, file holds 5"},
      {"odd.bin", good.substr(0, good.size() - 1), StatusCode::kDataLoss,
       "truncated: header says 4 tokens, file holds 3 and a stray byte"},
      {"header.bin", good.substr(0, 100), StatusCode::kDataLoss,
       "truncated header: the file holds 100 bytes, a shard header is 1024"},
      {"trailing.bin", good + "xyz", StatusCode::kDataLoss,
       "3 trailing bytes: header says 4 tokens, file holds 5 and a stray byte"},
      {"negative.bin", RawShard(20240520, 1, -1, {}), StatusCode::kDataLoss,
       "header says -1 tokens"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    std::string path = dir.Write(c.name, c.bytes);
    auto read = ReadShard(path);
    REQUIRE_FALSE(read.ok());
    CHECK(read.status().code() == c.code);
    CHECK(read.status().message() == "token shard " + path + ": " + c.message);
    auto count = ShardTokenCount(path);
    REQUIRE_FALSE(count.ok());
    CHECK(count.status() == read.status());
  }
}

TEST_CASE("a missing shard is NotFound naming the path", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.path() + "/nope.bin";
  auto read = ReadShard(path);
  REQUIRE_FALSE(read.ok());
  CHECK(read.status().code() == StatusCode::kNotFound);
  CHECK(read.status().message().find(path) != std::string::npos);
  CHECK(ShardTokenCount(path).status().code() == StatusCode::kNotFound);
}

TEST_CASE("tokens outside the vocabulary are rejected when asked", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.path() + "/v.bin";
  REQUIRE(WriteShard(path, std::vector<uint16_t>{1, 256, 257, 3}).ok());
  CHECK(ReadShard(path).ok());
  CHECK(ReadShard(path, 258).ok());
  auto read = ReadShard(path, 257);
  REQUIRE_FALSE(read.ok());
  CHECK(read.status().code() == StatusCode::kDataLoss);
  CHECK(read.status().message() ==
        "token shard " + path + ": token 257 at index 2 is outside the vocabulary of 257");
}

TEST_CASE("writing a shard is atomic and leaves no temporary file", "[data][shard]") {
  testing::TempDir dir;
  std::string path = dir.path() + "/s.bin";
  REQUIRE(WriteShard(path, std::vector<uint16_t>(1000, 7)).ok());
  REQUIRE(WriteShard(path, std::vector<uint16_t>{1, 2}).ok());
  CHECK(Listing(dir.path()) == std::vector<std::string>{"s.bin"});
  CHECK(*ShardTokenCount(path) == 2);
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::others_read) ==
        std::filesystem::perms::others_read);

  Status missing_dir = WriteShard(dir.path() + "/no/such/dir/s.bin", std::vector<uint16_t>{1});
  CHECK(missing_dir.code() == StatusCode::kNotFound);
  CHECK(missing_dir.message().find(dir.path() + "/no/such/dir/s.bin") != std::string::npos);
  CHECK(Listing(dir.path()) == std::vector<std::string>{"s.bin"});
}

}  // namespace
}  // namespace kiln::data
