// The checkpoint fence (fence.h): who may claim and who must stop, the
// record and the flag's token, restores passing over what a superseded gang
// wrote, on files and on objects, and two gangs of one job on one
// checkpoint directory: the older stops without writing once the newer
// holds it.
#include "worker/train/fence.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_training.h"
#include "tests/worker/storage/fake_object_store.h"
#include "worker/exit_codes.h"
#include "worker/train/object_checkpoint_store.h"
#include "worker/train/trainer.h"

namespace kiln::train {
namespace {

using Catch::Contains;

const CheckpointWriter kJobA1{"uid-a", 1};
const CheckpointWriter kJobA2{"uid-a", 2};
const CheckpointWriter kJobB0{"uid-b", 0};

TEST_CASE("who claims a fence, who holds it and who stops", "[worker][train][fence]") {
  struct Row {
    std::optional<Fence> current;
    CheckpointWriter mine;
    bool starting;
    FenceAction want;
  };
  const Fence held_by_a1{kJobA1, 10};
  const std::vector<Row> rows = {
      {std::nullopt, kJobA1, true, FenceAction::kClaim},
      {std::nullopt, kJobA1, false, FenceAction::kClaim},
      {held_by_a1, kJobA1, true, FenceAction::kHold},
      {held_by_a1, kJobA1, false, FenceAction::kHold},
      // A newer attempt of the job takes over, starting or running.
      {held_by_a1, kJobA2, true, FenceAction::kClaim},
      {held_by_a1, kJobA2, false, FenceAction::kClaim},
      // An older one stops.
      {Fence{kJobA2, 20}, kJobA1, true, FenceAction::kStop},
      {Fence{kJobA2, 20}, kJobA1, false, FenceAction::kStop},
      // Another job: a new job takes the location on start (a run resumed
      // under a job created again); a running one has lost it.
      {held_by_a1, kJobB0, true, FenceAction::kClaim},
      {held_by_a1, kJobB0, false, FenceAction::kStop},
  };
  for (const Row& r : rows) {
    INFO((r.current ? r.current->holder.job + ":" + std::to_string(r.current->holder.attempt)
                    : std::string("none"))
         << " vs " << r.mine.job << ":" << r.mine.attempt << (r.starting ? " starting" : ""));
    CHECK(DecideFence(r.current, r.mine, r.starting) == r.want);
  }
}

TEST_CASE("a restore under a fence passes over what a superseded gang wrote after the claim",
          "[worker][train][fence]") {
  const Fence fence{kJobA2, 100};
  auto at = [](int64_t step, std::optional<CheckpointWriter> w) {
    return CheckpointState{.step = step, .position = {}, .seed = 1, .writer = std::move(w)};
  };
  CHECK(CheckWrittenUnder(fence, at(100, kJobA1)).ok());  // What the holder resumed from.
  CHECK(CheckWrittenUnder(fence, at(50, std::nullopt)).ok());
  CHECK(CheckWrittenUnder(fence, at(200, kJobA2)).ok());  // The holder's own.
  const Status stale = CheckWrittenUnder(fence, at(200, kJobA1));
  CHECK_FALSE(stale.ok());
  CHECK_THAT(stale.message(),
             Contains("step 200") && Contains("base step 100") && Contains("job uid-a attempt 1"));
  CHECK_FALSE(CheckWrittenUnder(fence, at(101, std::nullopt)).ok());
  CHECK_FALSE(CheckWrittenUnder(fence, at(150, kJobB0)).ok());
}

TEST_CASE("the fence record and the flag's token parse back, and bad ones are refused",
          "[worker][train][fence]") {
  auto parsed = ParseFence(EncodeFence({kJobA2, 300}), "f");
  REQUIRE(parsed.ok());
  CHECK(parsed->holder == kJobA2);
  CHECK(parsed->base_step == 300);
  // The last three: numbers no int64 holds, or with a fraction (the fuzzer's
  // find: converting them was undefined behaviour).
  for (
      const char* bad :
      {"", "{", "[]", R"({"kind":"x","version":1})",
       R"({"kind":"kiln.dev/checkpoint-fence","version":1,"job":"a"})",
       R"({"kind":"kiln.dev/checkpoint-fence","version":1,"job":"a","attempt":3,"baseStep":207777777777777777777777777777770})",
       R"({"kind":"kiln.dev/checkpoint-fence","version":1,"job":"a","attempt":1e30,"baseStep":1})",
       R"({"kind":"kiln.dev/checkpoint-fence","version":1,"job":"a","attempt":2.5,"baseStep":1})"}) {
    INFO(bad);
    auto r = ParseFence(bad, "s3://b/run/fence.json");
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Contains("s3://b/run/fence.json"));
  }
  auto token = ParseFenceToken("0b5e-77:12");
  REQUIRE(token.ok());
  CHECK(token->job == "0b5e-77");
  CHECK(token->attempt == 12);
  for (const char* bad : {"", "uid", ":3", "uid:", "uid:x", "uid:-1", "uid:3x"}) {
    INFO(bad);
    CHECK(ParseFenceToken(bad).status().code() == StatusCode::kInvalidArgument);
  }
}

// The store-level protocol, the same on files and on objects: a newer
// attempt takes the fence over, the older one is told it is superseded, a
// restore skips the older one's late checkpoint.
void CheckProtocol(CheckpointStore& store) {
  auto model = kiln::testing::RandomGpt(1, 2, 32, 16, 1, 0.1f);
  auto state = [](int64_t step, const CheckpointWriter& w) {
    return CheckpointState{.step = step, .position = {0, 1, 2}, .seed = 7, .writer = w};
  };
  // Attempt 1 starts: no fence yet; it claims it and writes steps 10, 20.
  auto none = ReadFenceFor(store, kJobA1, true);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  REQUIRE(KeepFence(store, kJobA1, 0).ok());
  REQUIRE(store.Write(model, state(10, kJobA1), 5).ok());
  REQUIRE(KeepFence(store, kJobA1, 10).ok());  // Holds: nothing written.
  REQUIRE(store.Write(model, state(20, kJobA1), 5).ok());

  // Attempt 2 (the hub restarted the job elsewhere) reads the fence, restores
  // step 20 and claims with base 20.
  auto read = ReadFenceFor(store, kJobA2, true);
  REQUIRE(read.ok());
  REQUIRE(read->has_value());
  CHECK((*read)->holder == kJobA1);
  REQUIRE(store.WriteFence(EncodeFence({kJobA2, 20})).ok());

  // Attempt 1, cut off, checks before its next write: superseded.
  const Status lost = KeepFence(store, kJobA1, 20);
  CHECK(IsSuperseded(lost));
  CHECK_THAT(lost.message(), Contains("job uid-a attempt 2 holds the checkpoints"));
  CHECK(worker::ExitCodeName(worker::ExitCode::kSuperseded) == std::string("Superseded"));
  // Its write that raced the claim still lands (no compare-and-swap) ...
  REQUIRE(store.Write(model, state(30, kJobA1), 5).ok());
  // ... and a restore under the fence passes over it for step 20.
  auto fence = ReadFenceFor(store, kJobA2, false);
  REQUIRE(fence.ok());
  REQUIRE(fence->has_value());
  std::vector<std::string> warnings;
  auto restored = store.RestoreAccepted(
      model, [&](const std::string& w) { warnings.push_back(w); },
      [&](const CheckpointState& s) { return CheckWrittenUnder(**fence, s); });
  REQUIRE(restored.ok());
  REQUIRE(restored->has_value());
  CHECK((*restored)->step == 20);
  CHECK((*restored)->writer == kJobA1);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Contains("passing over checkpoint") && Contains("step 30"));
  // Without a filter the late write is what a plain restore would take.
  auto plain = store.RestoreLatest(model, [](const std::string&) {});
  REQUIRE(plain.ok());
  CHECK((*plain)->step == 30);

  // Another job that finds the location taken while running stops; one
  // starting takes it over.
  CHECK(IsSuperseded(KeepFence(store, kJobB0, 0)));
  auto b = ReadFenceFor(store, kJobB0, true);
  REQUIRE(b.ok());
  CHECK((*b)->holder == kJobA2);
}

TEST_CASE("the fence protocol on a checkpoint directory", "[worker][train][fence]") {
  kiln::testing::TempDir dir;
  auto store = NewFileCheckpointStore(dir.path() + "/ckpt");
  CheckProtocol(*store);
  CHECK(std::filesystem::exists(dir.path() + "/ckpt/fence.json"));
}

TEST_CASE("the fence protocol under an object store prefix", "[worker][train][fence][storage]") {
  auto objects = std::make_shared<storage::testing::FakeObjectStore>();
  ObjectCheckpointStore store(objects, "run");
  CheckProtocol(store);
  auto fence = ParseFence(objects->Object("run/fence.json"), "run/fence.json");
  REQUIRE(fence.ok());
  CHECK(fence->holder == kJobA2);
}

TEST_CASE("a restore that passes over every checkpoint starts fresh, one with damage is DataLoss",
          "[worker][train][fence]") {
  kiln::testing::TempDir dir;
  auto store = NewFileCheckpointStore(dir.path());
  auto model = kiln::testing::RandomGpt(1, 2, 32, 16, 1, 0.1f);
  REQUIRE(store->Write(model, {.step = 5, .position = {}, .seed = 7, .writer = kJobA1}, 3).ok());
  auto reject = [](const CheckpointState&) { return Status::FailedPrecondition("no"); };
  auto r = store->RestoreAccepted(
      model, [](const std::string&) {}, reject);
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
  // A damaged newer one beside it: nothing to resume from, and that is data loss.
  { std::ofstream(dir.path() + "/" + CheckpointFileName(9)) << "not a checkpoint"; }
  r = store->RestoreAccepted(
      model, [](const std::string&) {}, reject);
  CHECK(r.status().code() == StatusCode::kDataLoss);
  CHECK_THAT(r.status().message(), Contains("1 damaged, 1 passed over"));
}

// Two gangs of one job (attempts 1 and 2) on one directory, in process: the
// newer starts while the older is between its checkpoints at steps 10 and
// 20, and trains to the end; the older then finds the fence taken before
// its next step and stops with Superseded, having written nothing more.
TEST_CASE("an older attempt stops without writing once a newer one holds the fence",
          "[worker][train][fence]") {
  kiln::testing::TempDir dir;
  TrainOptions o = kiln::testing::TinyTrainOptions(kiln::testing::PrepareFortunes(dir));
  o.steps = 30;
  o.checkpoint_dir = dir.path() + "/ckpt";
  o.checkpoint_every = 10;
  o.checkpoint_keep = 10;
  o.fence_check_interval = std::chrono::milliseconds(0);  // Every step.
  TrainOptions older = o, newer = o;
  older.fence = kJobA1;
  newer.fence = kJobA2;

  std::vector<nlohmann::json> newer_events;
  Status newer_status;
  auto run_newer = [&] {
    auto t = Trainer::Create(newer);
    REQUIRE(t.ok());
    newer_status = (*t)->Run([&](const nlohmann::json& e) { newer_events.push_back(e); });
  };
  auto t = Trainer::Create(older);
  REQUIRE(t.ok());
  int64_t older_last_step = 0;
  std::vector<int64_t> older_checkpoints;
  const Status older_status = (*t)->Run([&](const nlohmann::json& e) {
    if (e["event"] == "checkpoint") older_checkpoints.push_back(e["step"].get<int64_t>());
    if (e["event"] != "step") return;
    older_last_step = e["step"].get<int64_t>();
    if (older_last_step == 15) run_newer();  // The hub's restart, elsewhere.
  });

  INFO(newer_status.ToString());
  REQUIRE(newer_status.ok());
  bool claimed = false, resumed_at_10 = false;
  for (const auto& e : newer_events) {
    if (e["event"] == "fenced") claimed = e["attempt"] == 2 && e["baseStep"] == 10;
    if (e["event"] == "resumed") resumed_at_10 = e["step"] == 10;
  }
  CHECK(claimed);
  CHECK(resumed_at_10);

  INFO(older_status.ToString());
  CHECK(IsSuperseded(older_status));
  CHECK(older_last_step == 15);  // Stopped before step 16.
  CHECK(older_checkpoints == std::vector<int64_t>{10});
  // Step 10 is the older attempt's; every later one the newer attempt's.
  std::vector<std::pair<int64_t, int64_t>> written;  // (step, attempt)
  auto paths = ListCheckpoints(o.checkpoint_dir);
  REQUIRE(paths.ok());
  for (const std::string& path : *paths) {
    auto config = ReadCheckpointConfig(path);
    REQUIRE(config.ok());
    auto model = model::Gpt<float>::Create(*config, 1);
    REQUIRE(model.ok());
    auto state = LoadCheckpoint(path, *model);
    REQUIRE(state.ok());
    REQUIRE(state->writer.has_value());
    written.emplace_back(state->step, state->writer->attempt);
  }
  CHECK(written == std::vector<std::pair<int64_t, int64_t>>{{30, 2}, {20, 2}, {10, 1}});
  auto store = OpenCheckpointStore(o.checkpoint_dir);
  REQUIRE(store.ok());
  auto text = (*store)->ReadFence();
  REQUIRE(text.ok());
  REQUIRE(text->has_value());
  auto fence = ParseFence(**text, "fence");
  REQUIRE(fence.ok());
  CHECK(fence->holder == kJobA2);
  CHECK(fence->base_step == 10);
}

}  // namespace
}  // namespace kiln::train
