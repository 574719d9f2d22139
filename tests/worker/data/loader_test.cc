#include "worker/data/loader.h"

#include <algorithm>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"
#include "worker/data/shard.h"

namespace kiln::data {
namespace {

// Token i of shard s is 1000*s + i, so every token tells where it came from.
std::vector<std::string> MakeShards(const testing::TempDir& dir, const std::vector<int>& sizes) {
  std::vector<std::string> paths;
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    std::vector<uint16_t> tokens;
    for (int i = 0; i < sizes[s]; ++i)
      tokens.push_back(static_cast<uint16_t>(1000 * s + static_cast<std::size_t>(i)));
    paths.push_back(dir.path() + "/shard_" + std::to_string(s) + ".bin");
    REQUIRE(WriteShard(paths.back(), tokens).ok());
  }
  return paths;
}

DataLoader MustOpen(const std::vector<std::string>& shards, const LoaderOptions& options) {
  auto loader = DataLoader::Open(shards, options);
  REQUIRE(loader.ok());
  return std::move(loader).value();
}

Batch MustNext(DataLoader& loader) {
  auto batch = loader.Next();
  REQUIRE(batch.ok());
  return std::move(batch).value();
}

std::vector<uint16_t> Range(int from, int count) {
  std::vector<uint16_t> v;
  for (int i = 0; i < count; ++i) v.push_back(static_cast<uint16_t>(from + i));
  return v;
}

TEST_CASE("a batch is B sequences of T tokens with targets shifted by one", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {100});
  DataLoader loader = MustOpen(shards, {.batch_size = 2, .seq_len = 4});
  CHECK(loader.tokens_per_step() == 8);
  Batch b = MustNext(loader);
  CHECK(b.inputs == Range(0, 8));
  CHECK(b.targets == Range(1, 8));
  CHECK(b.position == Position{0, 0, 0});
  CHECK(loader.position() == Position{0, 0, 8});
  Batch c = MustNext(loader);
  CHECK(c.inputs == Range(8, 8));
  CHECK(c.targets == Range(9, 8));
}

TEST_CASE("ranks split each step exactly like one process with W times the batch",
          "[data][loader]") {
  testing::TempDir dir;
  // Uneven shard sizes, so steps end shards early and the epoch wraps.
  auto shards = MakeShards(dir, {97, 50, 131});
  for (int world : {2, 4}) {
    for (bool shuffle : {false, true}) {
      INFO("world " << world << (shuffle ? ", shuffled" : ""));
      LoaderOptions single{.batch_size = 2 * world, .seq_len = 5};
      if (shuffle) single.shuffle_seed = 42;
      DataLoader whole = MustOpen(shards, single);
      std::vector<DataLoader> ranks;
      for (int r = 0; r < world; ++r) {
        LoaderOptions o = single;
        o.batch_size = 2;
        o.rank = r;
        o.world_size = world;
        ranks.push_back(MustOpen(shards, o));
      }
      for (int step = 0; step < 40; ++step) {
        Batch expected = MustNext(whole);
        std::vector<uint16_t> inputs, targets;
        for (auto& rank : ranks) {
          Batch b = MustNext(rank);
          CHECK(b.inputs.size() == 10);
          CHECK(b.position == expected.position);
          inputs.insert(inputs.end(), b.inputs.begin(), b.inputs.end());
          targets.insert(targets.end(), b.targets.begin(), b.targets.end());
          CHECK(rank.position() == whole.position());
        }
        CHECK(inputs == expected.inputs);
        CHECK(targets == expected.targets);
      }
      CHECK(whole.position().epoch >= 2);
    }
  }
}

TEST_CASE("a step reads the same sequences however accumulation and ranks split it",
          "[data][loader]") {
  // A global batch of 8 sequences as 1 x 8, 2 ranks x 4 micro-batches, 4 x 2
  // and 8 x 1: every split reads the same sequences per step, in the same
  // order (micro-batch, then rank), and moves to the next shard at the same
  // steps, so a job resized between steps trains on the same data.
  testing::TempDir dir;
  auto shards = MakeShards(dir, {97, 50, 131});
  for (bool shuffle : {false, true}) {
    INFO((shuffle ? "shuffled" : "in order"));
    LoaderOptions single{.batch_size = 8, .seq_len = 5};
    if (shuffle) single.shuffle_seed = 42;
    DataLoader whole = MustOpen(shards, single);
    std::vector<std::vector<DataLoader>> splits;  // [split][rank]
    std::vector<int> accumulations;
    for (int world : {2, 4, 8}) {
      const int accumulation = 8 / world;
      accumulations.push_back(accumulation);
      std::vector<DataLoader> ranks;
      for (int r = 0; r < world; ++r) {
        LoaderOptions o = single;
        o.batch_size = 1;
        o.rank = r;
        o.world_size = world;
        o.accumulation = accumulation;
        ranks.push_back(MustOpen(shards, o));
        CHECK(ranks.back().tokens_per_step() == whole.tokens_per_step());
      }
      splits.push_back(std::move(ranks));
    }
    for (int step = 0; step < 30; ++step) {
      Batch expected = MustNext(whole);
      for (std::size_t s = 0; s < splits.size(); ++s) {
        INFO("world " << splits[s].size() << ", step " << step);
        std::vector<uint16_t> inputs, targets;
        for (int m = 0; m < accumulations[s]; ++m) {
          for (auto& rank : splits[s]) {
            Batch b = MustNext(rank);
            CHECK(b.position == expected.position);
            inputs.insert(inputs.end(), b.inputs.begin(), b.inputs.end());
            targets.insert(targets.end(), b.targets.begin(), b.targets.end());
          }
        }
        CHECK(inputs == expected.inputs);
        CHECK(targets == expected.targets);
        for (auto& rank : splits[s]) CHECK(rank.position() == whole.position());
      }
    }
    CHECK(whole.position().epoch >= 1);
  }
  // Skip counts steps, not micro-batches.
  LoaderOptions o{.batch_size = 1, .seq_len = 5, .rank = 1, .world_size = 2, .accumulation = 4};
  DataLoader read = MustOpen(shards, o);
  DataLoader skipped = MustOpen(shards, o);
  for (int i = 0; i < 3 * 4; ++i) MustNext(read);
  skipped.Skip(3);
  CHECK(skipped.position() == read.position());
  CHECK(MustNext(skipped).inputs == MustNext(read).inputs);
  CHECK(DataLoader::Open(shards, {.batch_size = 1, .seq_len = 5, .accumulation = 0})
            .status()
            .code() == StatusCode::kInvalidArgument);
}

TEST_CASE("a shard too short for the next step hands over to the next, then the next epoch",
          "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {20, 30});
  DataLoader loader = MustOpen(shards, {.batch_size = 1, .seq_len = 4});
  // A step needs 5 tokens: shard 0 starts steps at 0, 4, 8, 12 (16 + 5 > 20).
  for (int offset : {0, 4, 8, 12}) {
    Batch b = MustNext(loader);
    CHECK(b.position == Position{0, 0, offset});
    CHECK(b.inputs == Range(offset, 4));
  }
  CHECK(loader.position() == Position{0, 1, 0});
  // Shard 1 starts steps at 0, 4, ..., 24 (28 + 5 > 30).
  for (int offset = 0; offset <= 24; offset += 4) {
    Batch b = MustNext(loader);
    CHECK(b.position == Position{0, 1, offset});
    CHECK(b.inputs == Range(1000 + offset, 4));
    CHECK(b.targets == Range(1001 + offset, 4));
  }
  CHECK(loader.position() == Position{1, 0, 0});
  Batch again = MustNext(loader);
  CHECK(again.position == Position{1, 0, 0});
  CHECK(again.inputs == Range(0, 4));
}

TEST_CASE("a step may use a shard's last token as its final target", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {9});
  DataLoader loader = MustOpen(shards, {.batch_size = 2, .seq_len = 4});
  Batch b = MustNext(loader);
  CHECK(b.targets.back() == 8);
  CHECK(loader.position() == Position{1, 0, 0});
}

TEST_CASE("seeking to a saved position resumes the exact batch sequence", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {61, 40, 77, 52});
  for (bool shuffle : {false, true}) {
    for (int steps : {0, 1, 5, 9, 23}) {
      INFO(steps << " steps" << (shuffle ? ", shuffled" : ""));
      LoaderOptions options{.batch_size = 2, .seq_len = 3, .rank = 1, .world_size = 2};
      if (shuffle) options.shuffle_seed = 7;
      DataLoader first = MustOpen(shards, options);
      for (int i = 0; i < steps; ++i) MustNext(first);
      std::string saved = first.position().ToJson().dump();

      auto position = Position::FromJson(nlohmann::json::parse(saved));
      REQUIRE(position.ok());
      DataLoader resumed = MustOpen(shards, options);
      REQUIRE(resumed.Seek(*position).ok());
      CHECK(resumed.position() == first.position());
      for (int i = 0; i < 30; ++i) {
        Batch want = MustNext(first);
        Batch got = MustNext(resumed);
        CHECK(got.inputs == want.inputs);
        CHECK(got.targets == want.targets);
        CHECK(got.position == want.position);
      }
    }
  }
}

TEST_CASE("skipping steps lands where as many batches would, across shards and epochs",
          "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {61, 40, 77, 52});
  for (bool shuffle : {false, true}) {
    for (int from : {0, 3}) {
      for (int skip : {0, 1, 4, 9, 40}) {
        INFO("from step " << from << ", skipping " << skip << (shuffle ? ", shuffled" : ""));
        LoaderOptions options{.batch_size = 2, .seq_len = 3, .rank = 1, .world_size = 2};
        if (shuffle) options.shuffle_seed = 7;
        DataLoader read = MustOpen(shards, options);
        DataLoader skipped = MustOpen(shards, options);
        for (int i = 0; i < from; ++i) {
          MustNext(read);
          MustNext(skipped);
        }
        for (int i = 0; i < skip; ++i) MustNext(read);
        skipped.Skip(skip);
        if (skip > 0) CHECK(skipped.position() == read.position());
        Batch want = MustNext(read);
        Batch got = MustNext(skipped);
        CHECK(got.inputs == want.inputs);
        CHECK(got.position == want.position);
      }
    }
  }
}

TEST_CASE("seeking to a shard's end continues with the next shard", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {20, 30});
  DataLoader loader = MustOpen(shards, {.batch_size = 1, .seq_len = 4});
  REQUIRE(loader.Seek({.epoch = 3, .shard = 0, .offset = 20}).ok());
  CHECK(loader.position() == Position{3, 1, 0});
  REQUIRE(loader.Seek({.epoch = 3, .shard = 1, .offset = 26}).ok());
  CHECK(loader.position() == Position{4, 0, 0});
}

TEST_CASE("seeking outside the shards is rejected and keeps the position", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {20, 30});
  DataLoader loader = MustOpen(shards, {.batch_size = 1, .seq_len = 4});
  MustNext(loader);
  Position before = loader.position();
  for (Position bad : {Position{0, 2, 0}, Position{0, -1, 0}, Position{-1, 0, 0},
                       Position{0, 0, 21}, Position{0, 0, -4}}) {
    INFO(bad.ToJson().dump());
    Status s = loader.Seek(bad);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(loader.position() == before);
  }
}

TEST_CASE("positions round-trip through JSON and bad JSON is rejected", "[data][loader]") {
  Position p{.epoch = 2, .shard = 5, .offset = 123456789012};
  CHECK(p.ToJson() == nlohmann::json{{"epoch", 2}, {"shard", 5}, {"offset", 123456789012}});
  auto back = Position::FromJson(p.ToJson());
  REQUIRE(back.ok());
  CHECK(*back == p);
  for (const char* bad :
       {R"([1,2,3])", R"({"epoch":0,"shard":1})", R"({"epoch":0,"shard":"1","offset":0})",
        R"({"epoch":0,"shard":1,"offset":-5})", R"({"epoch":0.5,"shard":1,"offset":0})"}) {
    INFO(bad);
    CHECK(Position::FromJson(nlohmann::json::parse(bad)).status().code() ==
          StatusCode::kInvalidArgument);
  }
}

TEST_CASE("shuffled shard orders are permutations fixed by seed and epoch", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {10, 10, 10, 10, 10, 10, 10, 10});
  DataLoader plain = MustOpen(shards, {.batch_size = 1, .seq_len = 2});
  CHECK(plain.ShardOrder(0) == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(plain.ShardOrder(9) == plain.ShardOrder(0));

  DataLoader a = MustOpen(shards, {.batch_size = 1, .seq_len = 2, .shuffle_seed = 1234});
  DataLoader b = MustOpen(shards, {.batch_size = 1, .seq_len = 2, .shuffle_seed = 1234});
  DataLoader other = MustOpen(shards, {.batch_size = 1, .seq_len = 2, .shuffle_seed = 99});
  bool epochs_differ = false;
  bool seeds_differ = false;
  for (int64_t epoch = 0; epoch < 6; ++epoch) {
    auto order = a.ShardOrder(epoch);
    CHECK(order == b.ShardOrder(epoch));
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == plain.ShardOrder(0));
    epochs_differ |= order != a.ShardOrder(0);
    seeds_differ |= order != other.ShardOrder(epoch);
  }
  CHECK(epochs_differ);
  CHECK(seeds_differ);
  // Pinned (computed independently from the splitmix64 Fisher-Yates definition in
  // docs/data.md): the order must not change with the compiler or standard library.
  CHECK(a.ShardOrder(0) == std::vector<std::size_t>{4, 0, 2, 7, 1, 3, 6, 5});
  CHECK(a.ShardOrder(1) == std::vector<std::size_t>{0, 5, 3, 6, 4, 7, 1, 2});

  // The batches follow the order: a step reads 3 tokens and advances 2, so each
  // 10-token shard gives 4 steps.
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    for (std::size_t shard : a.ShardOrder(epoch)) {
      for (int step = 0; step < 4; ++step) {
        Batch x = MustNext(a);
        CHECK(x.inputs.front() == 1000 * shard + 2 * static_cast<std::size_t>(step));
        CHECK(MustNext(b).inputs == x.inputs);
      }
    }
  }
}

TEST_CASE("loader options are checked up front", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {20, 8});
  auto code = [&](const std::vector<std::string>& paths, const LoaderOptions& o) {
    return DataLoader::Open(paths, o).status().code();
  };
  CHECK(code(shards, {.batch_size = 0, .seq_len = 1}) == StatusCode::kInvalidArgument);
  CHECK(code(shards, {.batch_size = 1, .seq_len = 0}) == StatusCode::kInvalidArgument);
  CHECK(code(shards, {.batch_size = 1, .seq_len = 1, .rank = 2, .world_size = 2}) ==
        StatusCode::kInvalidArgument);
  CHECK(code(shards, {.batch_size = 1, .seq_len = 1, .rank = -1, .world_size = 2}) ==
        StatusCode::kInvalidArgument);
  CHECK(code(shards, {.batch_size = 1, .seq_len = 1, .world_size = 0}) ==
        StatusCode::kInvalidArgument);
  CHECK(code({}, {.batch_size = 1, .seq_len = 1}) == StatusCode::kInvalidArgument);
  CHECK(code(shards, {.batch_size = 1 << 20, .seq_len = 1 << 20}) == StatusCode::kInvalidArgument);

  // Shard 1 holds 8 tokens: enough for 7 + 1, not for 8 + 1.
  CHECK(DataLoader::Open(shards, {.batch_size = 7, .seq_len = 1}).ok());
  auto small =
      DataLoader::Open(shards, {.batch_size = 2, .seq_len = 2, .rank = 1, .world_size = 2});
  REQUIRE_FALSE(small.ok());
  CHECK(small.status().code() == StatusCode::kFailedPrecondition);
  CHECK(
      small.status().message() ==
      "data loader: token shard " + shards[1] +
          " holds 8 tokens, fewer than the 9 one step needs (world 2 x batch 2 x sequence 2 + 1)");

  auto missing =
      DataLoader::Open({shards[0], dir.path() + "/gone.bin"}, {.batch_size = 1, .seq_len = 1});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find(dir.path() + "/gone.bin") != std::string::npos);
}

TEST_CASE("the loader rejects tokens outside the vocabulary when asked", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {300});  // tokens 0..299
  DataLoader unchecked = MustOpen(shards, {.batch_size = 1, .seq_len = 4});
  CHECK(unchecked.Next().ok());
  DataLoader checked = MustOpen(shards, {.batch_size = 1, .seq_len = 4, .vocab_size = 257});
  auto batch = checked.Next();
  REQUIRE_FALSE(batch.ok());
  CHECK(batch.status().code() == StatusCode::kDataLoss);
  CHECK(batch.status().message().find("token 257 at index 257") != std::string::npos);
}

TEST_CASE("a shard rewritten after Open is reported, not misread", "[data][loader]") {
  testing::TempDir dir;
  auto shards = MakeShards(dir, {20, 30});
  DataLoader loader = MustOpen(shards, {.batch_size = 1, .seq_len = 4});
  REQUIRE(WriteShard(shards[0], std::vector<uint16_t>(12, 1)).ok());
  auto batch = loader.Next();
  REQUIRE_FALSE(batch.ok());
  CHECK(batch.status().code() == StatusCode::kDataLoss);
  CHECK(batch.status().message().find(shards[0]) != std::string::npos);
}

}  // namespace
}  // namespace kiln::data
