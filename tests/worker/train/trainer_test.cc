// The training loop in process: options refused with the option named, the
// FLOP accounting, the progress records (steps, validation, done), gradient
// accumulation matching a larger batch, a stop between steps, and a
// diverging run stopped as a NumericsFault, and the rewind after one (resume
// before the diverged checkpoints, skip their data). Checkpoints and exact resume are
// in checkpoint_test.cc; the command around the loop in train_command_test.cc.
#include "worker/train/trainer.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/http_probe.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_training.h"
#include "worker/data/loader.h"
#include "worker/dist/tcp_communicator.h"
#include "worker/train/checkpoint.h"
#include "worker/train/checkpoint_store.h"
#include "worker/train/fence.h"

namespace kiln::train {
namespace {

using Catch::Contains;

// Longer and faster-learning than the shared tiny run, so that learning shows.
TrainOptions Tiny(const std::string& manifest) {
  TrainOptions o = kiln::testing::TinyTrainOptions(manifest);
  o.steps = 30;
  o.learning_rate = 3e-3;
  o.warmup_steps = 2;
  o.grad_clip = 1.0;
  o.seed = 7;
  return o;
}

struct Run {
  Status status;
  std::vector<nlohmann::json> events;
  std::map<int64_t, double> losses;
  int64_t completed = 0;
};

Run Train(const TrainOptions& o, std::atomic<bool>* stop = nullptr, int64_t stop_after = 0) {
  auto trainer = Trainer::Create(o);
  INFO(trainer.status().ToString());
  REQUIRE(trainer.ok());
  Run run;
  run.status = (*trainer)->Run(
      [&](const nlohmann::json& e) {
        run.events.push_back(e);
        if (e["event"] == "step") {
          run.losses[e["step"].get<int64_t>()] = e["loss"].get<double>();
          if (stop != nullptr && e["step"].get<int64_t>() == stop_after) *stop = true;
        }
      },
      stop);
  run.completed = (*trainer)->completed_step();
  return run;
}

std::vector<nlohmann::json> Events(const Run& run, const std::string& kind) {
  std::vector<nlohmann::json> out;
  for (const auto& e : run.events) {
    if (e["event"] == kind) out.push_back(e);
  }
  return out;
}

TEST_CASE("bad training options are refused with the option named", "[worker][train]") {
  struct Case {
    const char* what;
    void (*bend)(TrainOptions&);
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no manifest", [](TrainOptions& o) { o.manifest.clear(); }, "manifest.json"},
      {"batch 0", [](TrainOptions& o) { o.batch_size = 0; }, "batch size"},
      {"seq_len 0", [](TrainOptions& o) { o.seq_len = 0; }, "sequence length"},
      {"accumulation 0", [](TrainOptions& o) { o.grad_accumulation = 0; }, "grad accumulation"},
      {"steps 0", [](TrainOptions& o) { o.steps = 0; }, "steps must be"},
      {"lr 0", [](TrainOptions& o) { o.learning_rate = 0; }, "learning rate"},
      {"lr NaN", [](TrainOptions& o) { o.learning_rate = std::nan(""); }, "learning rate"},
      {"warmup past steps", [](TrainOptions& o) { o.warmup_steps = o.steps + 1; }, "warmup"},
      {"min lr ratio 2", [](TrainOptions& o) { o.min_lr_ratio = 2; }, "min lr ratio"},
      {"negative clip", [](TrainOptions& o) { o.grad_clip = -1; }, "grad clip"},
      {"spike factor 1", [](TrainOptions& o) { o.loss_spike_factor = 1; }, "loss spike factor"},
      {"log every 0", [](TrainOptions& o) { o.log_every = 0; }, "log every"},
      {"checkpoint keep 0", [](TrainOptions& o) { o.checkpoint_keep = 0; }, "checkpoint keep"},
      {"negative peak", [](TrainOptions& o) { o.peak_flops = -1; }, "peak FLOP/s"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    TrainOptions o = Tiny("/nonexistent/manifest.json");
    c.bend(o);
    Status s = Trainer::CheckOptions(o);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK_THAT(s.message(), Contains(c.message));
    // Create refuses the same options before it opens any data.
    auto t = Trainer::Create(o);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().message() == s.message());
  }
  CHECK(Trainer::CheckOptions(Tiny("/nonexistent/manifest.json")).ok());
  // Good options over missing data fail on the data, naming it.
  auto missing = Trainer::Create(Tiny("/nonexistent/manifest.json"));
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.status().message(), Contains("/nonexistent/manifest.json"));
}

TEST_CASE("training FLOPs per token follow the llm.c accounting", "[worker][train]") {
  model::GptConfig gpt2;
  gpt2.num_layers = 12;
  gpt2.channels = 768;
  // GPT-2 small: 124,439,808 parameters at context 1024.
  CHECK(TrainingFlopsPerToken(gpt2, 124439808, 1024) == 6.0 * 124439808 + 12.0 * 12 * 768 * 1024);
  // The attention term grows with the context; the parameter term does not.
  CHECK(TrainingFlopsPerToken(gpt2, 0, 2048) == 2 * TrainingFlopsPerToken(gpt2, 0, 1024));
}

TEST_CASE("a run learns and reports steps, validation and the end", "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.log_every = 5;
  o.val_every = 10;
  o.peak_flops = 1e12;
  Run run = Train(o);
  INFO(run.status.ToString());
  REQUIRE(run.status.ok());
  CHECK(run.completed == 30);
  // Step 1, every 5th and the last.
  std::vector<int64_t> logged;
  for (const auto& [step, loss] : run.losses) logged.push_back(step);
  CHECK(logged == std::vector<int64_t>{1, 5, 10, 15, 20, 25, 30});
  CHECK(run.losses.at(30) < run.losses.at(1) - 0.5);
  for (const auto& e : Events(run, "step")) {
    for (const char* key : {"loss", "lr", "gradNorm", "msPerStep", "tokensPerSecond", "mfu"}) {
      INFO(key << " in " << e.dump());
      CHECK(e.contains(key));
    }
    CHECK(e["tokensPerSecond"].get<double>() > 0);
    CHECK(std::isfinite(e["gradNorm"].get<double>()));
  }
  // Warm-up: the rate at step 1 is below the peak it reaches after step 2.
  CHECK(Events(run, "step")[0]["lr"].get<double>() < o.learning_rate);
  std::vector<int64_t> validated;
  for (const auto& e : Events(run, "validation")) {
    validated.push_back(e["step"].get<int64_t>());
    CHECK(std::isfinite(e["valLoss"].get<double>()));
  }
  CHECK(validated == std::vector<int64_t>{10, 20, 30});
  auto done = Events(run, "done");
  REQUIRE(done.size() == 1);
  CHECK(done[0]["device"] == "cpu");
  CHECK(done[0]["steps"] == 30);
  CHECK(done[0]["loss"].get<double>() == run.losses.at(30));
  CHECK(done[0].contains("valLoss"));
  CHECK(run.events.back() == done[0]);
}

TEST_CASE("gradient accumulation follows the trajectory of the larger batch", "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions big = Tiny(kiln::testing::PrepareFortunes(dir));
  big.steps = 8;
  big.batch_size = 4;
  TrainOptions accumulated = big;
  accumulated.batch_size = 2;
  accumulated.grad_accumulation = 2;
  TrainOptions smaller = big;
  smaller.batch_size = 2;
  Run a = Train(big), b = Train(accumulated), c = Train(smaller);
  REQUIRE(a.status.ok());
  REQUIRE(b.status.ok());
  REQUIRE(c.status.ok());
  // Same sequences per step, summed in another order: equal up to rounding.
  for (int64_t step = 1; step <= 8; ++step) {
    INFO("step " << step);
    CHECK(b.losses.at(step) == Approx(a.losses.at(step)).epsilon(1e-4));
  }
  // And not trivially so: half the batch without accumulation is another run.
  CHECK(c.losses.at(8) != Approx(a.losses.at(8)).epsilon(1e-4));
}

// `o` on `world` ranks (threads of this process over TCP on loopback), each
// stopping after step `stop_after` (0: never); rank 0's run.
// Every rank's run; `on_event(rank, event)` sees each progress record.
std::vector<Run> TrainAllRanks(
    int world, const TrainOptions& o, int64_t stop_after = 0,
    const std::function<void(int, const nlohmann::json&)>& on_event = nullptr) {
  const int port = kiln::testing::FreePort();
  REQUIRE(port > 0);
  std::vector<Run> runs(static_cast<size_t>(world));
  std::vector<Status> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      dist::TcpOptions t;
      t.env = {.rank = r, .world_size = world, .master_addr = "127.0.0.1", .master_port = port};
      t.timeout = std::chrono::seconds(60);
      t.rendezvous_timeout = std::chrono::seconds(60);
      auto comm = dist::ConnectTcp(t);
      if (!comm.ok()) {
        errors[static_cast<size_t>(r)] = comm.status();
        return;
      }
      auto trainer = Trainer::Create(o, comm->get());
      if (!trainer.ok()) {
        errors[static_cast<size_t>(r)] = trainer.status();
        return;
      }
      std::atomic<bool> stop{false};
      Run& run = runs[static_cast<size_t>(r)];
      run.status = (*trainer)->Run(
          [&](const nlohmann::json& e) {
            run.events.push_back(e);
            if (on_event) on_event(r, e);
            if (e["event"] != "step") return;
            run.losses[e["step"].get<int64_t>()] = e["loss"].get<double>();
            if (stop_after > 0 && e["step"].get<int64_t>() == stop_after) stop = true;
          },
          &stop);
      run.completed = (*trainer)->completed_step();
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r << ": " << errors[static_cast<size_t>(r)].ToString());
    REQUIRE(errors[static_cast<size_t>(r)].ok());
  }
  return runs;
}

Run TrainRanks(int world, const TrainOptions& o, int64_t stop_after = 0) {
  return TrainAllRanks(world, o, stop_after)[0];
}

TEST_CASE("a run resized between checkpoints keeps the loss curve of one that was not",
          "[worker][train]") {
  // An elastic TrainingJob's resize: the gang stops (a checkpoint on the way
  // out), then resumes at another world size with the accumulation that
  // keeps the global batch of 8 sequences. One process x 4 micro-batches
  // throughout, against 2 ranks x 2 for steps 1-5 and 4 ranks x 1 for steps
  // 6-12: the same sequences per step (loader.h), summed in another order.
  kiln::testing::TempDir dir;
  TrainOptions one = Tiny(kiln::testing::PrepareFortunes(dir));
  one.steps = 12;
  one.batch_size = 2;
  one.grad_accumulation = 4;
  one.log_every = 1;
  one.checkpoint_every = 100;  // Only the stop's checkpoint.
  one.checkpoint_keep = 3;
  const Run whole = Train(one);
  REQUIRE(whole.status.ok());

  TrainOptions resized = one;
  resized.checkpoint_dir = dir.path() + "/ckpt";
  resized.grad_accumulation = 2;
  const Run first = TrainRanks(2, resized, /*stop_after=*/5);
  INFO(first.status.ToString());
  REQUIRE(first.status.ok());
  CHECK(first.completed == 5);
  resized.grad_accumulation = 1;
  const Run second = TrainRanks(4, resized);
  INFO(second.status.ToString());
  REQUIRE(second.status.ok());
  REQUIRE(Events(second, "resumed").size() == 1);
  CHECK(Events(second, "resumed")[0]["step"] == 5);
  for (int64_t step = 1; step <= 12; ++step) {
    INFO("step " << step);
    const double got = step <= 5 ? first.losses.at(step) : second.losses.at(step);
    CHECK(got == Approx(whole.losses.at(step)).epsilon(1e-4));
  }
  // Not trivially so: resuming with the global batch halved is another run.
  TrainOptions halved = resized;
  halved.checkpoint_dir = dir.path() + "/ckpt-halved";
  halved.grad_accumulation = 2;
  REQUIRE(TrainRanks(2, halved, 5).status.ok());
  halved.grad_accumulation = 1;
  const Run other = TrainRanks(2, halved);
  REQUIRE(other.status.ok());
  CHECK(other.losses.at(12) != Approx(whole.losses.at(12)).epsilon(1e-4));
}

TEST_CASE("a stop ends the run between steps, after the step in flight", "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  std::atomic<bool> stop{false};
  Run run = Train(o, &stop, /*stop_after=*/4);
  REQUIRE(run.status.ok());
  CHECK(run.completed == 4);
  CHECK(run.losses.rbegin()->first == 4);
  auto done = Events(run, "done");
  REQUIRE(done.size() == 1);
  CHECK(done[0]["steps"] == 4);
}

// Found by tests/chaos/checkpoint_chaos_test.cc: a worker restarted after its
// final checkpoint (killed before it exited, or its pod restarted before the
// operator saw it finish) reported a final loss of 0, which the job's status
// then showed.
TEST_CASE("a run restarted after its last step trains nothing and claims no loss",
          "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.steps = 10;
  o.checkpoint_dir = dir.path() + "/ckpt";
  Run first = Train(o);
  REQUIRE(first.status.ok());
  REQUIRE(Events(first, "done").size() == 1);
  CHECK(Events(first, "done")[0].contains("loss"));
  const std::string final_checkpoint = o.checkpoint_dir + "/step-00000010.ckpt";
  const auto written = std::filesystem::last_write_time(final_checkpoint);

  Run again = Train(o);
  REQUIRE(again.status.ok());
  CHECK(again.completed == 10);
  CHECK(again.losses.empty());
  CHECK(Events(again, "checkpoint").empty());
  REQUIRE(Events(again, "resumed").size() == 1);
  CHECK(Events(again, "resumed")[0]["step"] == 10);
  auto done = Events(again, "done");
  REQUIRE(done.size() == 1);
  CHECK(done[0]["steps"] == 10);
  CHECK_FALSE(done[0].contains("loss"));
  CHECK(std::filesystem::last_write_time(final_checkpoint) == written);
}

TEST_CASE("a diverging run stops as a NumericsFault naming the step", "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.learning_rate = 50;  // Far past stable: the loss leaves its average at once.
  o.warmup_steps = 0;
  o.grad_clip = 0;
  o.loss_spike_factor = 1.5;
  Run run = Train(o);
  INFO(run.status.ToString());
  REQUIRE_FALSE(run.status.ok());
  CHECK(IsNumericsFault(run.status));
  CHECK_THAT(run.status.message(), Contains("step "));
  CHECK(run.completed < o.steps);
  CHECK(Events(run, "done").empty());
}

TEST_CASE("a rewind resumes before the diverged checkpoints and skips the data they saw",
          "[worker][train]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.grad_accumulation = 2;  // A skipped step is two micro-batches.
  o.checkpoint_dir = dir.path() + "/ckpt";
  o.checkpoint_every = 10;
  o.checkpoint_keep = 5;
  o.log_every = 1;
  const Run uninterrupted = Train(o);
  REQUIRE(uninterrupted.status.ok());
  REQUIRE(ListCheckpoints(o.checkpoint_dir)->size() == 3);  // Steps 10, 20, 30.

  // Say the run diverged at step 25 and the newest checkpoint (30) is
  // suspect. A rewind alone: step 30 goes, the run resumes at 20 and repeats
  // the same losses exactly (same weights, same data).
  TrainOptions rewind = o;
  rewind.rewind_before_step = 30;
  const Run replay = Train(rewind);
  REQUIRE(replay.status.ok());
  auto rewound = Events(replay, "rewound");
  REQUIRE(rewound.size() == 1);
  CHECK(rewound[0]["before"] == 30);
  CHECK(rewound[0]["discarded"] == 1);
  REQUIRE(Events(replay, "resumed").size() == 1);
  CHECK(Events(replay, "resumed")[0]["step"] == 20);
  CHECK(Events(replay, "skipped").empty());
  for (int64_t step = 21; step <= 30; ++step) {
    INFO("step " << step);
    CHECK(replay.losses.at(step) == uninterrupted.losses.at(step));
  }

  // With the data skipped through step 25: resumed at 20, the next step
  // reads what step 26 read (checked against a loader), so the losses
  // differ; the position after the skip is saved as step 20's checkpoint.
  rewind.skip_data_through_step = 25;
  const Run skipping = Train(rewind);
  REQUIRE(skipping.status.ok());
  auto resumed = Events(skipping, "resumed");
  auto skipped = Events(skipping, "skipped");
  REQUIRE(resumed.size() == 1);
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0]["step"] == 20);
  CHECK(skipped[0]["steps"] == 5);
  auto loader = data::DataLoader::OpenSplit(o.manifest, "train",
                                            {.batch_size = o.batch_size,
                                             .seq_len = o.seq_len,
                                             .accumulation = o.grad_accumulation,
                                             .shuffle_seed = o.seed});
  REQUIRE(loader.ok());
  auto from = data::Position::FromJson(resumed[0]["position"]);
  REQUIRE(from.ok());
  REQUIRE(loader->Seek(*from).ok());
  for (int i = 0; i < 5 * o.grad_accumulation; ++i) REQUIRE(loader->Next().ok());
  CHECK(skipped[0]["position"] == loader->position().ToJson());
  auto checkpoints = Events(skipping, "checkpoint");
  REQUIRE_FALSE(checkpoints.empty());
  CHECK(checkpoints[0]["step"] == 20);  // Written before step 21.
  CHECK(skipping.losses.begin()->first == 21);
  CHECK(skipping.losses.at(21) != uninterrupted.losses.at(21));

  // Durable: a run that loses the checkpoints after 20 (a crash before the
  // next one) and resumes with no flags at all continues the skipped run.
  REQUIRE(std::filesystem::remove(o.checkpoint_dir + "/" + CheckpointFileName(30)));
  const Run again = Train(o);
  REQUIRE(again.status.ok());
  REQUIRE(Events(again, "resumed").size() == 1);
  CHECK(Events(again, "resumed")[0]["position"] == skipped[0]["position"]);
  CHECK(again.losses.at(21) == skipping.losses.at(21));
  CHECK(again.losses.at(30) == skipping.losses.at(30));

  // Without a checkpoint directory there is nothing to rewind.
  TrainOptions bad = o;
  bad.checkpoint_dir.clear();
  bad.rewind_before_step = 30;
  CHECK(Trainer::CheckOptions(bad).code() == StatusCode::kInvalidArgument);
}

// The fence (fence.h) in a data-parallel gang: rank 0 alone reads it, and
// every rank ends as Superseded (exit 8), at the start and mid-run alike.
TEST_CASE("every rank of a gang whose fence a newer attempt holds ends as Superseded",
          "[worker][train][fence]") {
  kiln::testing::TempDir dir;
  TrainOptions o = Tiny(kiln::testing::PrepareFortunes(dir));
  o.steps = 12;
  o.checkpoint_dir = dir.path() + "/ckpt";
  o.checkpoint_every = 4;
  o.fence = CheckpointWriter{"uid", 4};
  o.fence_check_interval = std::chrono::milliseconds(0);
  auto store = NewFileCheckpointStore(o.checkpoint_dir);

  SECTION("at the start") {
    REQUIRE(store->WriteFence(EncodeFence({{"uid", 5}, 0})).ok());
    for (const Run& run : TrainAllRanks(2, o)) {
      INFO(run.status.ToString());
      CHECK(IsSuperseded(run.status));
      CHECK(run.completed == 0);
    }
  }
  SECTION("mid-run, before the next step") {
    // Attempt 5 claims while rank 0 reports step 6: both ranks stop before
    // step 7, and the step-4 checkpoint stays the last one written.
    auto runs = TrainAllRanks(2, o, 0, [&](int rank, const nlohmann::json& e) {
      if (rank == 0 && e["event"] == "step" && e["step"] == 6) {
        REQUIRE(store->WriteFence(EncodeFence({{"uid", 5}, 4})).ok());
      }
    });
    for (const Run& run : runs) {
      INFO(run.status.ToString());
      CHECK(IsSuperseded(run.status));
      CHECK(run.completed == 6);
      CHECK(Events(run, "checkpoint").size() == (&run == &runs[0] ? 1u : 0u));
    }
    auto listed = ListCheckpoints(o.checkpoint_dir);
    REQUIRE(listed.ok());
    CHECK(listed->size() == 1);
  }
}

}  // namespace
}  // namespace kiln::train
