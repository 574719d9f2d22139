// Data-parallel `kiln-worker train` with real worker processes on loopback:
// 1, 2 and 4 ranks on the same global batch follow the same loss trajectory;
// a stop on one rank stops all at the same step and the run resumes exactly
// (also on a different number of ranks); a rank that dies or hangs makes the
// others exit with CommunicationTimeout (4) instead of hanging; ranks started
// with different settings are refused as a configuration error (2).
#include <signal.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/subprocess.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/temp_dir.h"

namespace kiln {
namespace {

using kiln::testing::BackgroundProcess;
using kiln::testing::TempDir;

// Prepared fortunes shards, shared by the tests of this file.
const std::string& Manifest() {
  static TempDir* dir = new TempDir();  // Lives as long as the test process.
  static const std::string manifest = [] {
    auto r = RunProcess({.argv = {KILN_WORKER_BIN, "prepare", "--input",
                                  "/usr/share/games/fortunes", "--output", dir->path()},
                         .timeout = std::chrono::minutes(2)});
    REQUIRE(r.ok());
    REQUIRE(r->exit_code == 0);  // scripts/setup.sh installs the fortunes package.
    return dir->path() + "/manifest.json";
  }();
  return manifest;
}

std::vector<std::string> TrainArgs(int batch, int steps) {
  return {KILN_WORKER_BIN, "train",
          "--data",        Manifest(),
          "--layers",      "2",
          "--heads",       "2",
          "--channels",    "32",
          "--seq",         "32",
          "--batch",       std::to_string(batch),
          "--steps",       std::to_string(steps),
          "--lr",          "2e-3",
          "--val-every",   "4",
          "--val-batches", "2"};
}

struct Job {
  std::vector<std::unique_ptr<BackgroundProcess>> ranks;
  std::vector<std::string> outputs;  // Files with each rank's stdout and stderr.
};

// Starts `world` ranks of `args` with the torchrun variables, one thread each
// (so a 2-core machine runs 4 ranks without oversubscribing OpenMP).
Job Start(const TempDir& dir, int world, const std::vector<std::string>& args,
          const std::function<std::vector<std::string>(int)>& extra = {}) {
  static int job_id = 0;
  const int port = testing::FreePort();
  REQUIRE(port > 0);
  Job job;
  for (int r = 0; r < world; ++r) {
    auto a = args;
    if (extra) {
      auto more = extra(r);
      a.insert(a.end(), more.begin(), more.end());
    }
    job.outputs.push_back(dir.path() + "/job" + std::to_string(job_id) + "-rank" +
                          std::to_string(r) + ".out");
    job.ranks.push_back(std::make_unique<BackgroundProcess>(
        a, job.outputs.back(),
        std::vector<std::string>{"WORLD_SIZE=" + std::to_string(world), "RANK=" + std::to_string(r),
                                 "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port),
                                 "OMP_NUM_THREADS=1"}));
  }
  ++job_id;
  return job;
}

// Waits for a process to exit, failing the test (not hanging it) when it is
// still running after `limit` — a liveness bound, far above normal run times.
int WaitExit(BackgroundProcess& p, std::chrono::seconds limit = std::chrono::seconds(180)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto code = p.Poll()) return *code;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("worker still running after " << limit.count() << " s:\n" << p.Output());
  return -1;
}

std::vector<nlohmann::json> Events(const std::string& output, const std::string& event) {
  std::vector<nlohmann::json> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == event) out.push_back(j);
  }
  return out;
}

std::map<int64_t, double> Losses(const std::string& output) {
  std::map<int64_t, double> out;
  for (const auto& e : Events(output, "step")) out[e["step"]] = e["loss"];
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_CASE("1, 2 and 4 ranks on the same global batch follow the same loss trajectory",
          "[worker][train][dist][process]") {
  TempDir dir;
  const int kSteps = 8, kGlobalBatch = 8;
  std::map<int, std::map<int64_t, double>> losses;  // By world size, from rank 0.
  std::map<int, double> val;
  for (int world : {1, 2, 4}) {
    Job job = Start(dir, world, TrainArgs(kGlobalBatch / world, kSteps));
    std::vector<std::string> outputs;
    for (int r = 0; r < world; ++r) {
      const int code = WaitExit(*job.ranks[static_cast<size_t>(r)]);
      INFO("world " << world << " rank " << r << ":\n"
                    << job.ranks[static_cast<size_t>(r)]->Output());
      REQUIRE(code == 0);
      outputs.push_back(job.ranks[static_cast<size_t>(r)]->Output());
    }
    // Every rank of a job holds the same averaged loss, bit for bit.
    for (int r = 1; r < world; ++r) {
      CHECK(Losses(outputs[static_cast<size_t>(r)]) == Losses(outputs[0]));
    }
    losses[world] = Losses(outputs[0]);
    REQUIRE(losses[world].size() == kSteps);
    auto done = Events(outputs[0], "done");
    REQUIRE(done.size() == 1);
    val[world] = done[0]["valLoss"];
  }
  // Only the summation order differs: float rounding, far below the loss's
  // movement (it falls by ~0.3 over these steps).
  for (int world : {2, 4}) {
    for (int64_t step = 1; step <= kSteps; ++step) {
      INFO("world " << world << " step " << step);
      CHECK(losses[world][step] == Approx(losses[1][step]).epsilon(1e-5));
    }
    CHECK(val[world] == Approx(val[1]).epsilon(1e-5));
  }
  CHECK(losses[1][kSteps] < losses[1][1] - 0.05);
}

TEST_CASE("A stop on one rank stops all after the same step, and the job resumes exactly",
          "[worker][train][dist][process]") {
  TempDir dir;
  const int kSteps = 40;
  auto with_checkpoints = [&](const std::string& ckpt) {
    return [ckpt](int) {
      return std::vector<std::string>{"--checkpoint-dir", ckpt, "--checkpoint-every", "100"};
    };
  };
  // The uninterrupted run.
  Job whole = Start(dir, 2, TrainArgs(4, kSteps), with_checkpoints(dir.path() + "/whole"));
  REQUIRE(WaitExit(*whole.ranks[0]) == 0);
  REQUIRE(WaitExit(*whole.ranks[1]) == 0);
  const auto expected = Losses(whole.ranks[0]->Output());
  REQUIRE(expected.size() == kSteps);

  // The same job, stopped by a SIGTERM to rank 1 only, once it has begun.
  const std::string ckpt = dir.path() + "/stopped";
  Job first = Start(dir, 2, TrainArgs(4, kSteps), with_checkpoints(ckpt));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (Events(first.ranks[1]->Output(), "step").size() < 2 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  first.ranks[1]->Signal(SIGTERM);
  REQUIRE(WaitExit(*first.ranks[0]) == 0);
  REQUIRE(WaitExit(*first.ranks[1]) == 0);
  auto done0 = Events(first.ranks[0]->Output(), "done"),
       done1 = Events(first.ranks[1]->Output(), "done");
  REQUIRE(done0.size() == 1);
  REQUIRE(done1.size() == 1);
  const int64_t stopped_at = done0[0]["steps"];
  CHECK(done1[0]["steps"] == stopped_at);
  if (stopped_at == kSteps) {
    WARN("the run finished before the stop arrived; only the resume of a finished run is checked");
  }
  // Only rank 0 writes checkpoints.
  auto saved = Events(first.ranks[0]->Output(), "checkpoint");
  REQUIRE(saved.size() == 1);
  CHECK(saved[0]["step"] == stopped_at);
  CHECK(Events(first.ranks[1]->Output(), "checkpoint").empty());

  // Resumed on two ranks: the rest of the trajectory, bit for bit.
  Job second = Start(dir, 2, TrainArgs(4, kSteps), with_checkpoints(ckpt));
  REQUIRE(WaitExit(*second.ranks[0]) == 0);
  REQUIRE(WaitExit(*second.ranks[1]) == 0);
  for (const auto& out : {second.ranks[0]->Output(), second.ranks[1]->Output()}) {
    auto resumed = Events(out, "resumed");
    REQUIRE(resumed.size() == 1);
    CHECK(resumed[0]["step"] == stopped_at);
    for (const auto& [step, loss] : Losses(out)) {
      INFO("step " << step);
      CHECK(step > stopped_at);
      CHECK(loss == expected.at(step));
    }
  }

  // Rank 0's checkpoint also resumes a single process with the same global
  // batch (a job that lost a node): the same trajectory within rounding.
  std::filesystem::copy(ckpt, dir.path() + "/single");
  auto args = TrainArgs(8, kSteps);
  args.insert(args.end(), {"--checkpoint-dir", dir.path() + "/single"});
  auto single = RunProcess({.argv = args, .timeout = std::chrono::minutes(3)});
  REQUIRE(single.ok());
  INFO(single->stderr_data);
  REQUIRE(single->exit_code == 0);
  for (const auto& [step, loss] : Losses(single->stdout_data)) {
    INFO("step " << step);
    CHECK(step > stopped_at);
    CHECK(loss == Approx(expected.at(step)).epsilon(1e-5));
  }
}

TEST_CASE("A rank that dies makes the others exit with CommunicationTimeout",
          "[worker][train][dist][process]") {
  TempDir dir;
  // A long timeout: the survivors must notice the closed connections, not wait.
  Job job = Start(dir, 3, TrainArgs(2, 100000), [&](int r) {
    return std::vector<std::string>{"--comm-timeout", "10m", "--termination-message-path",
                                    dir.path() + "/term" + std::to_string(r)};
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (Events(job.ranks[2]->Output(), "step").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  job.ranks[2]->Signal(SIGKILL);
  for (int r : {0, 1}) {
    const int code = WaitExit(*job.ranks[static_cast<size_t>(r)]);
    INFO("rank " << r << ":\n" << job.ranks[static_cast<size_t>(r)]->Output());
    CHECK(code == 4);
    auto term =
        nlohmann::json::parse(ReadAll(dir.path() + "/term" + std::to_string(r)), nullptr, false);
    REQUIRE(term.is_object());
    CHECK(term["reason"] == "CommunicationTimeout");
    CHECK_THAT(term["message"].get<std::string>(), Catch::Contains("closed the connection"));
  }
  // Rank 0 reads from rank 2 directly.
  CHECK_THAT(job.ranks[0]->Output(), Catch::Contains("rank 2 closed the connection"));
}

TEST_CASE("A rank that hangs makes the others exit with CommunicationTimeout",
          "[worker][train][dist][process]") {
  TempDir dir;
  Job job = Start(dir, 2, TrainArgs(4, 100000), [](int) {
    return std::vector<std::string>{"--comm-timeout", "2s"};
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (Events(job.ranks[1]->Output(), "step").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  job.ranks[1]->Signal(SIGSTOP);  // Alive, holding its sockets, silent.
  const int code = WaitExit(*job.ranks[0]);
  INFO(job.ranks[0]->Output());
  CHECK(code == 4);
  CHECK_THAT(job.ranks[0]->Output(), Catch::Contains("rank 1"));
  CHECK_THAT(job.ranks[0]->Output(), Catch::Contains("for 2s"));
  job.ranks[1]->Signal(SIGKILL);
}

TEST_CASE("Ranks started with different settings are refused as a configuration error",
          "[worker][train][dist][process]") {
  TempDir dir;
  Job job = Start(dir, 2, TrainArgs(4, 5), [](int r) {
    return std::vector<std::string>{"--seed", r == 0 ? "1" : "2"};
  });
  for (int r : {0, 1}) {
    const int code = WaitExit(*job.ranks[static_cast<size_t>(r)]);
    INFO("rank " << r << ":\n" << job.ranks[static_cast<size_t>(r)]->Output());
    CHECK(code == 2);
    CHECK_THAT(job.ranks[static_cast<size_t>(r)]->Output(),
               Catch::Contains("seed is 2 there but 1 on rank 0"));
  }
  // And a bad environment is one too, naming the variable.
  auto r = RunProcess({.argv = TrainArgs(4, 5),
                       .env = {{"WORLD_SIZE", "2"}, {"RANK", "5"}},
                       .timeout = std::chrono::minutes(1)});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 2);
  CHECK_THAT(r->stderr_data, Catch::Contains("RANK=5 is outside [0, 1]"));
}

}  // namespace
}  // namespace kiln
