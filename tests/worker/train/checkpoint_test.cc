// Checkpoints: a run stopped at step K and resumed in a new trainer continues
// with exactly the losses of an uninterrupted run; a damaged newest
// checkpoint is skipped for the previous one with a warning; only the newest
// K are kept; a different model shape is a configuration error.
#include "worker/train/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>

#include <catch2/catch.hpp>

#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_training.h"
#include "worker/train/load_model.h"
#include "worker/train/trainer.h"

namespace kiln::train {
namespace {

namespace fs = std::filesystem;

struct Run {
  std::map<int64_t, double> losses;  // step -> loss
  std::vector<nlohmann::json> events;
};

TrainOptions Tiny(const std::string& manifest) { return kiln::testing::TinyTrainOptions(manifest); }

Run Train(const TrainOptions& o, int64_t stop_after = 0) {
  auto trainer = Trainer::Create(o);
  REQUIRE(trainer.ok());
  Run run;
  std::atomic<bool> stop{false};
  Status s = (*trainer)->Run(
      [&](const nlohmann::json& e) {
        run.events.push_back(e);
        if (e["event"] == "step") {
          run.losses[e["step"].get<int64_t>()] = e["loss"].get<double>();
          if (stop_after > 0 && e["step"] == stop_after) stop = true;
        }
      },
      &stop);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return run;
}

bool HasEvent(const Run& r, const std::string& event, const std::string& text = "") {
  for (const auto& e : r.events) {
    if (e["event"] == event && e.dump().find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_CASE("a run resumed from its checkpoint repeats the uninterrupted losses exactly",
          "[train][checkpoint]") {
  kiln::testing::TempDir dir;
  const std::string manifest = kiln::testing::PrepareFortunes(dir);
  Run whole = Train(Tiny(manifest));
  REQUIRE(whole.losses.size() == 20);

  TrainOptions o = Tiny(manifest);
  o.checkpoint_dir = dir.path() + "/ckpt";
  Run first = Train(o, /*stop_after=*/10);
  CHECK(first.losses.size() == 10);
  auto files = ListCheckpoints(o.checkpoint_dir);
  REQUIRE(files.ok());
  REQUIRE(files->size() == 2);  // Steps 10 and 5.
  CHECK(fs::path(files->front()).filename() == "step-00000010.ckpt");

  SECTION("from the newest") {
    Run second = Train(o);
    CHECK(HasEvent(second, "resumed", "\"step\":10"));
    REQUIRE(second.losses.size() == 10);
    for (const auto& [step, loss] : second.losses) {
      INFO("step " << step);
      CHECK(loss == whole.losses.at(step));  // Bit for bit.
    }
  }
  SECTION("from the previous one when the newest is corrupted") {
    {
      std::fstream f(files->front(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-100, std::ios::end);
      f.put('\x42');
    }
    Run second = Train(o);
    CHECK(HasEvent(second, "warning", "checksum mismatch"));
    CHECK(HasEvent(second, "resumed", "\"step\":5"));
    REQUIRE(second.losses.size() == 15);
    for (const auto& [step, loss] : second.losses) CHECK(loss == whole.losses.at(step));
  }
  SECTION("from the previous one when the newest is truncated") {
    fs::resize_file(files->front(), fs::file_size(files->front()) / 2);
    Run second = Train(o);
    CHECK(HasEvent(second, "warning", "truncated"));
    CHECK(HasEvent(second, "resumed", "\"step\":5"));
    for (const auto& [step, loss] : second.losses) CHECK(loss == whole.losses.at(step));
  }
}

TEST_CASE("only the newest checkpoints are kept, and bad ones are refused clearly",
          "[train][checkpoint]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.steps = 10;
  o.checkpoint_dir = dir.path() + "/ckpt";
  o.checkpoint_every = 2;
  o.checkpoint_keep = 3;
  Train(o);
  auto files = ListCheckpoints(o.checkpoint_dir);
  REQUIRE(files.ok());
  REQUIRE(files->size() == 3);
  CHECK(fs::path((*files)[0]).filename() == "step-00000010.ckpt");
  CHECK(fs::path((*files)[2]).filename() == "step-00000006.ckpt");

  // A different model shape is a configuration error naming both shapes.
  TrainOptions wider = o;
  wider.model.channels = 64;
  auto trainer = Trainer::Create(wider);
  REQUIRE(trainer.ok());
  Status s = (*trainer)->Run([](const nlohmann::json&) {});
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("differs from this run's") != std::string::npos);

  // So is another seed: the seed is the run's RNG state (the shard order).
  TrainOptions reseeded = o;
  reseeded.seed = o.seed + 1;
  trainer = Trainer::Create(reseeded);
  REQUIRE(trainer.ok());
  s = (*trainer)->Run([](const nlohmann::json&) {});
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("written by a run with seed 1337, this run has seed 1338") !=
        std::string::npos);

  // Every checkpoint damaged: DataLoss, not a silent fresh start.
  for (const auto& f : *files) {
    std::ofstream(f, std::ios::binary | std::ios::trunc) << "garbage";
  }
  trainer = Trainer::Create(o);
  REQUIRE(trainer.ok());
  std::vector<std::string> warnings;
  s = (*trainer)->Run([&](const nlohmann::json& e) {
    if (e["event"] == "warning") warnings.push_back(e["message"]);
  });
  CHECK(s.code() == StatusCode::kDataLoss);
  CHECK(warnings.size() == 3);
  CHECK(warnings[0].find("bad magic") != std::string::npos);
}

// Found by fuzz/checkpoint_fuzz.cc: a header length of 1.6 GB in a
// 100-byte file was allocated before it was read, and a header claiming a
// huge model made LoadModel allocate it. By reading the code beside it: a
// tensor offset near 2^64 wrapped the bounds check and read outside the file.
TEST_CASE("damaged checkpoint headers are refused before anything is allocated for them",
          "[train][checkpoint]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/step-00000001.ckpt";
  auto write = [&](uint32_t header_len, const std::string& header, const std::string& body) {
    std::string file = "KILNCKPT";
    for (uint32_t v : {1u, header_len}) {
      for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    }
    std::ofstream(path, std::ios::binary) << file << header << body;
  };
  SECTION("a header length past the end of the file") {
    write(0x6000021b, "{}", std::string(100, 'x'));
    auto config = ReadCheckpointConfig(path);
    CHECK(config.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(config.status().message(), Catch::Contains("truncated header"));
  }
  SECTION("a model bigger than the file") {
    const std::string header =
        R"({"model":{"layers":48,"heads":16,"channels":8192,"maxSeqLen":65536,)"
        R"("vocabSize":65536,"paddedVocabSize":65536}})";
    write(static_cast<uint32_t>(header.size()), header, std::string(64, 'x'));
    auto config = ReadCheckpointConfig(path);
    CHECK(config.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(config.status().message(), Catch::Contains("truncated"));
    CHECK(LoadModel(path, "", [](const std::string&) {}).status().code() == StatusCode::kDataLoss);
  }
  SECTION("a shape whose parameter count overflows") {
    const std::string header =
        R"({"model":{"layers":2000000000,"heads":1,"channels":2000000000,"maxSeqLen":1,)"
        R"("vocabSize":1,"paddedVocabSize":1}})";
    write(static_cast<uint32_t>(header.size()), header, "");
    CHECK(ReadCheckpointConfig(path).status().code() == StatusCode::kDataLoss);
  }
  SECTION("a tensor offset that wraps around") {
    auto model = kiln::testing::RandomGpt(1, 1, 8, 8, 3, 0.1f);
    auto written = WriteCheckpoint(dir.path(), model, CheckpointState{1, {}, 1}, 1);
    REQUIRE(written.ok());
    REQUIRE(*written == path);
    std::ifstream in(path, std::ios::binary);
    std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i)
      len |= static_cast<uint32_t>(static_cast<unsigned char>(file[static_cast<size_t>(12 + i)]))
             << (8 * i);
    auto header = nlohmann::json::parse(file.substr(16, len));
    const std::string tensors = file.substr(16 + len + 64);  // After the header's SHA-256.
    const uint64_t bytes = header["tensors"][0]["bytes"].get<uint64_t>();
    // An offset such that body + offset + bytes wraps to exactly 0 (the
    // header's own length moves the body, hence twice).
    std::string text = header.dump();
    for (int i = 0; i < 2; ++i) {
      header["tensors"][0]["offset"] = uint64_t{0} - (16 + text.size()) - bytes;
      text = header.dump();
    }
    write(static_cast<uint32_t>(text.size()), text, tensors);
    auto loaded = LoadCheckpoint(path, model);
    CHECK(loaded.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(loaded.status().message(), Catch::Contains("truncated: tensor params"));
  }
}

// Found by tests/chaos/checkpoint_chaos_test.cc: a bit flipped in the header
// of a version 1 checkpoint (only the tensors had checksums) changed its step
// from 105 to 145, and a run resumed from it silently, 40 steps ahead of its
// data and schedule; a flip in the seed or model shape failed the run as a
// configuration error instead of skipping the checkpoint.
TEST_CASE("a bit flipped in a checkpoint's header is damage, skipped for the one before",
          "[train][checkpoint]") {
  kiln::testing::TempDir dir;
  auto model = kiln::testing::RandomGpt(1, 1, 8, 8, 3, 0.1f);
  for (int64_t step : {5, 10}) {
    REQUIRE(WriteCheckpoint(dir.path(), model, CheckpointState{step, {}, 1}, 2).ok());
  }
  const std::string newest = dir.path() + "/step-00000010.ckpt";
  std::ifstream in(newest, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  auto rewrite = [&](const std::string& bytes) {
    std::ofstream(newest, std::ios::binary | std::ios::trunc) << bytes;
  };
  auto restore = [&]() {
    std::vector<std::string> warnings;
    auto restored = RestoreLatestCheckpoint(dir.path(), model,
                                            [&](const std::string& w) { warnings.push_back(w); });
    REQUIRE(restored.ok());
    REQUIRE(restored->has_value());
    return std::make_pair((*restored)->step, warnings);
  };

  SECTION("in the step, the seed or the model shape") {
    for (const std::string field : {"\"step\":10", "\"seed\":1", "\"channels\":8"}) {
      INFO(field);
      const size_t at = file.find(field);
      REQUIRE(at != std::string::npos);
      std::string flipped = file;
      flipped[at + field.size() - 1] ^= 0x04;  // '0' -> '4', '1' -> '5', '8' -> '<'.
      rewrite(flipped);
      auto [step, warnings] = restore();
      CHECK(step == 5);
      REQUIRE(warnings.size() == 1);
      CHECK_THAT(warnings[0], Catch::Contains("skipping damaged checkpoint") &&
                                  Catch::Contains("step-00000010.ckpt"));
      CHECK(ReadCheckpointConfig(newest).status().code() == StatusCode::kDataLoss);
    }
  }
  SECTION("in the header's checksum itself") {
    std::string flipped = file;
    const size_t sum = file.find("\"tensors\"");
    flipped[file.find("}]}", sum) + 3] ^= 0x01;  // The first hex digit after the JSON.
    rewrite(flipped);
    auto [step, warnings] = restore();
    CHECK(step == 5);
    REQUIRE(warnings.size() == 1);
    CHECK_THAT(warnings[0], Catch::Contains("header checksum mismatch"));
  }
  SECTION("a version 1 checkpoint, without the header's checksum, is still read") {
    std::string v1 = file;
    v1[8] = 1;
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) {
      len |= static_cast<uint32_t>(static_cast<unsigned char>(file[static_cast<size_t>(12 + i)]))
             << (8 * i);
    }
    v1.erase(16 + len, 64);
    rewrite(v1);
    auto [step, warnings] = restore();
    CHECK(step == 10);
    CHECK(warnings.empty());
    auto config = ReadCheckpointConfig(newest);
    REQUIRE(config.ok());
    CHECK(config->channels == 8);
  }
}

// Found by tests/chaos/checkpoint_chaos_test.cc: a worker killed while it
// wrote a checkpoint left its temporary file, which nothing ever removed; on
// a volume sized for the kept checkpoints, enough of them (each up to a
// checkpoint's size) would make every later write fail with ENOSPC.
TEST_CASE("a checkpoint write removes the partial files of writes killed before their rename",
          "[train][checkpoint]") {
  kiln::testing::TempDir dir;
  auto model = kiln::testing::RandomGpt(1, 1, 8, 8, 3, 0.1f);
  REQUIRE(WriteCheckpoint(dir.path(), model, CheckpointState{5, {}, 1}, 3).ok());
  const std::string partial = dir.Write(".step-00000010.ckpt.tmp-a1B2c3", "KILNCKPT partial");
  const std::string other = dir.Write(".notes.txt.tmp-a1B2c3", "not a checkpoint's");
  const std::string visible = dir.Write("notes.txt", "kept");

  REQUIRE(WriteCheckpoint(dir.path(), model, CheckpointState{10, {}, 1}, 3).ok());
  CHECK_FALSE(fs::exists(partial));
  CHECK(fs::exists(other));
  CHECK(fs::exists(visible));
  auto files = ListCheckpoints(dir.path());
  REQUIRE(files.ok());
  CHECK(files->size() == 2);
}

}  // namespace
}  // namespace kiln::train
