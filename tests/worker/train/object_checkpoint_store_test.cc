// Checkpoints in an object store (an in-memory fake here; the integration
// tests use SeaweedFS): the manifest is written last and makes a checkpoint
// visible, keep deletes old ones only after, damage is detected and skipped,
// an upload that never completed is invisible.
#include "worker/train/object_checkpoint_store.h"

#include <catch2/catch.hpp>

#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "tests/worker/storage/fake_object_store.h"

namespace kiln::train {
namespace {

using storage::testing::FakeObjectStore;

CheckpointState State(int64_t step) { return {.step = step, .position = {0, 1, 2}, .seed = 7}; }

TEST_CASE("object checkpoints round-trip and keep the newest", "[train][checkpoint][storage]") {
  auto store = std::make_shared<FakeObjectStore>();
  ObjectCheckpointStore checkpoints(store, "run");
  auto m = kiln::testing::RandomGpt(1, 2, 32, 16, 1, 0.1f);
  for (int64_t step : {5, 10, 15}) {
    auto where = checkpoints.Write(m, State(step), /*keep=*/2);
    REQUIRE(where.ok());
    CHECK(*where == "fake://run/" + CheckpointFileName(step));
  }
  CHECK(store->Keys() ==
        std::vector<std::string>{"run/step-00000010.ckpt", "run/step-00000010.manifest.json",
                                 "run/step-00000015.ckpt", "run/step-00000015.manifest.json"});
  const std::string manifest = store->Object("run/step-00000015.manifest.json");
  CHECK(manifest.find("\"sha256\"") != std::string::npos);
  CHECK(manifest.find("\"headerSha256\"") != std::string::npos);

  auto other = kiln::testing::RandomGpt(1, 2, 32, 16, 2, 0.1f);
  std::vector<std::string> warnings;
  auto restored =
      checkpoints.RestoreLatest(other, [&](const std::string& w) { warnings.push_back(w); });
  REQUIRE(restored.ok());
  REQUIRE(restored->has_value());
  CHECK((*restored)->step == 15);
  CHECK((*restored)->position == data::Position{0, 1, 2});
  CHECK(warnings.empty());
  CHECK(std::equal(m.params().begin(), m.params().end(), other.params().begin()));
}

TEST_CASE("a rewind deletes the checkpoints from its step on, files and objects alike",
          "[train][checkpoint][storage]") {
  auto m = kiln::testing::RandomGpt(1, 2, 32, 16, 1, 0.1f);
  auto store = std::make_shared<FakeObjectStore>();
  ObjectCheckpointStore objects(store, "run");
  kiln::testing::TempDir dir;
  auto files = NewFileCheckpointStore(dir.path());
  for (CheckpointStore* checkpoints : {static_cast<CheckpointStore*>(&objects), files.get()}) {
    for (int64_t step : {5, 10, 15, 20}) {
      REQUIRE(checkpoints->Write(m, State(step), /*keep=*/5).ok());
    }
    auto discarded = checkpoints->DiscardFrom(15);
    REQUIRE(discarded.ok());
    CHECK(*discarded == 2);
    auto restored = checkpoints->RestoreLatest(m, [](const std::string&) {});
    REQUIRE(restored.ok());
    REQUIRE(restored->has_value());
    CHECK((*restored)->step == 10);
    auto none = checkpoints->DiscardFrom(11);  // Nothing at or after 11 now.
    REQUIRE(none.ok());
    CHECK(*none == 0);
  }
  CHECK(store->Keys() ==
        std::vector<std::string>{"run/step-00000005.ckpt", "run/step-00000005.manifest.json",
                                 "run/step-00000010.ckpt", "run/step-00000010.manifest.json"});
  auto left = ListCheckpoints(dir.path());
  REQUIRE(left.ok());
  CHECK(left->size() == 2);
}

TEST_CASE("a damaged or unfinished object checkpoint is skipped for the previous one",
          "[train][checkpoint][storage]") {
  auto store = std::make_shared<FakeObjectStore>();
  ObjectCheckpointStore checkpoints(store, "run/");
  auto m = kiln::testing::RandomGpt(1, 2, 32, 16, 1, 0.1f);
  REQUIRE(checkpoints.Write(m, State(5), 3).ok());
  REQUIRE(checkpoints.Write(m, State(10), 3).ok());
  auto restore = [&](std::vector<std::string>* warnings) {
    auto into = kiln::testing::RandomGpt(1, 2, 32, 16, 3, 0.1f);
    return checkpoints.RestoreLatest(into, [&](const std::string& w) { warnings->push_back(w); });
  };
  std::vector<std::string> warnings;

  SECTION("a flipped byte in a tensor") {
    std::string& data = store->Object("run/step-00000010.ckpt");
    data[data.size() - 100] ^= 0x01;
    auto r = restore(&warnings);
    REQUIRE(r.ok());
    CHECK((*r)->step == 5);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("checksum mismatch") != std::string::npos);
  }
  SECTION("a flipped byte in the header") {
    store->Object("run/step-00000010.ckpt")[20] ^= 0x01;
    auto r = restore(&warnings);
    REQUIRE(r.ok());
    CHECK((*r)->step == 5);
    CHECK(warnings.at(0).find("header") != std::string::npos);
  }
  SECTION("a data object without its manifest is not a checkpoint") {
    // A writer that died between its upload and its manifest.
    auto writer = store->NewWriter("run/step-00000020.ckpt");
    REQUIRE(writer.ok());
    REQUIRE((*writer)->Append("partial").ok());
    REQUIRE((*writer)->Commit().ok());
    auto r = restore(&warnings);
    REQUIRE(r.ok());
    CHECK((*r)->step == 10);
    CHECK(warnings.empty());
    // The next checkpoint removes the orphan.
    REQUIRE(checkpoints.Write(m, State(25), 3).ok());
    auto keys = store->Keys();
    CHECK(std::find(keys.begin(), keys.end(), "run/step-00000020.ckpt") == keys.end());
  }
  SECTION("a manifest whose data object is gone") {
    REQUIRE(store->Delete("run/step-00000010.ckpt").ok());
    auto r = restore(&warnings);
    REQUIRE(r.ok());
    CHECK((*r)->step == 5);
    CHECK(warnings.at(0).find("is missing") != std::string::npos);
  }
  SECTION("everything damaged is DataLoss, not a fresh start") {
    store->Object("run/step-00000010.ckpt")[30] ^= 0x01;
    store->Object("run/step-00000005.manifest.json") = "{";
    auto r = restore(&warnings);
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK(warnings.size() == 2);
  }
  SECTION("another model shape is a configuration error") {
    auto wider = kiln::testing::RandomGpt(1, 2, 64, 16, 3, 0.1f);
    auto r = checkpoints.RestoreLatest(wider, [](const std::string&) {});
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kiln::train
