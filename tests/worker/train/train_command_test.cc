// `kiln-worker train` end to end through the binary: it learns the fortunes
// corpus (the loss falls), reports JSON progress, and maps failures to the
// documented exit codes.
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/subprocess.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/temp_dir.h"
#include "tests/support/worker_process.h"

namespace kiln {
namespace {

using testing::Worker;

std::vector<nlohmann::json> Lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST_CASE("kiln-worker train learns the fortunes corpus and reports progress as JSON",
          "[worker][train][process]") {
  kiln::testing::TempDir dir;
  auto prep = Worker({"prepare", "--input", "/usr/share/games/fortunes", "--output", dir.path()});
  INFO(prep.stderr_data);
  REQUIRE(prep.exit_code == 0);  // scripts/setup.sh installs the fortunes package.
  auto r = Worker({"train",       "--data",      dir.path() + "/manifest.json",
                   "--layers",    "2",           "--channels",
                   "64",          "--heads",     "4",
                   "--seq",       "32",          "--batch",
                   "8",           "--steps",     "120",
                   "--lr",        "2e-3",        "--warmup",
                   "10",          "--log-every", "10",
                   "--val-every", "60"});
  INFO(r.stderr_data);
  REQUIRE(r.exit_code == 0);
  auto lines = Lines(r.stdout_data);
  REQUIRE(lines.size() >= 3);
  const auto& first = lines.front();
  const auto& done = lines.back();
  CHECK(first["event"] == "step");
  CHECK(first["step"] == 1);
  CHECK(done["event"] == "done");
  CHECK(done["steps"] == 120);
  // A byte-level model starts near ln(257) = 5.55 and learns English quickly.
  CHECK(first["loss"].get<double>() > 5.0);
  // 120 steps of a 2-layer model: both losses at least 1.5 nats below the start.
  CHECK(done["loss"].get<double>() < first["loss"].get<double>() - 1.5);
  CHECK(done["valLoss"].get<double>() < first["loss"].get<double>() - 1.5);
  int validations = 0;
  for (const auto& l : lines) {
    if (l["event"] == "validation") ++validations;
    if (l["event"] == "step") {
      CHECK(l["lr"].get<double>() > 0);
      CHECK(l["tokensPerSecond"].get<double>() > 0);
      CHECK(l.contains("gradNorm"));
    }
  }
  CHECK(validations == 2);  // At step 60 and at the end.
}

// --device auto on a machine (or in a pod) without a GPU: the CPU, said in a
// warning line and in the done line's device. Skipped where a GPU is visible
// (auto then picks it; the GPU suites cover that path).
TEST_CASE("kiln-worker train --device auto falls back to the CPU without a GPU, saying so",
          "[worker][train][process]") {
  kiln::testing::TempDir dir;
  auto devices = Worker({"devices"});
  if (devices.stdout_data.find("\"index\"") != std::string::npos) {
    WARN("SKIPPED: a GPU is visible here; --device auto trains on it");
    return;
  }
  auto prep = Worker({"prepare", "--input", "/usr/share/games/fortunes", "--output", dir.path()});
  REQUIRE(prep.exit_code == 0);
  auto r =
      Worker({"train", "--device", "auto", "--data", dir.path() + "/manifest.json", "--layers", "1",
              "--channels", "32", "--heads", "2", "--seq", "16", "--batch", "2", "--steps", "3"});
  INFO(r.stderr_data);
  REQUIRE(r.exit_code == 0);
  auto lines = Lines(r.stdout_data);
  REQUIRE(lines.size() >= 2);
  CHECK(lines.front()["event"] == "warning");
  CHECK_THAT(lines.front()["message"].get<std::string>(),
             Catch::Contains("--device auto:") && Catch::Contains("training on the CPU"));
  CHECK(lines.back()["event"] == "done");
  CHECK(lines.back()["device"] == "cpu");
}

TEST_CASE("kiln-worker train maps failures to the documented exit codes",
          "[worker][train][process]") {
  kiln::testing::TempDir dir;
  REQUIRE(Worker({"prepare", "--input", "/usr/share/games/fortunes", "--output", dir.path()})
              .exit_code == 0);
  const std::string manifest = dir.path() + "/manifest.json";
  auto r = Worker({"train", "--bogus", "1"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("unknown flag '--bogus'") != std::string::npos);
  r = Worker({"train", "--data", manifest, "--steps", "ten"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("--steps: \"ten\" is not an integer") != std::string::npos);
  r = Worker({"train", "--steps", "3"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("--data is required") != std::string::npos);
  r = Worker({"train", "--data", manifest, "--heads", "3"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("multiple of num_heads") != std::string::npos);
  r = Worker({"train", "--data", manifest, "--device", "gpu"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("--device: \"gpu\" is not one of cpu, cuda") != std::string::npos);
  r = Worker({"train", "--data", manifest, "--cuda-device", "1"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("--cuda-device needs --device cuda") != std::string::npos);
#if !KILN_TEST_WORKER_CUDA
  // A CPU-only build says what is missing instead of training on the CPU.
  r = Worker({"train", "--data", manifest, "--device", "cuda"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("built without CUDA") != std::string::npos);
#else
  // With CUDA built in, a device that is not there is an infrastructure
  // fault (exit 3: retry on another node).
  r = Worker({"train", "--data", manifest, "--device", "cuda", "--cuda-device", "4096"});
  CHECK(r.exit_code == 3);
  CHECK((r.stderr_data.find("no CUDA device") != std::string::npos ||
         r.stderr_data.find("device 4096 does not exist") != std::string::npos));
#endif
  r = Worker({"train", "--data", dir.path() + "/missing.json"});
  CHECK(r.exit_code == 6);
  CHECK(r.stderr_data.find("missing.json") != std::string::npos);
  // A learning rate that blows the weights up: NaN loss, NumericsFault, and
  // the reason in the termination message the operator will read.
  const std::string message = dir.path() + "/termination-log";
  r = Worker({"train", "--data", manifest, "--steps", "5", "--lr", "1e30", "--layers", "1",
              "--channels", "32", "--heads", "2", "--seq", "16", "--termination-message-path",
              message});
  CHECK(r.exit_code == 5);
  CHECK(r.stderr_data.find("not finite") != std::string::npos);
  std::ifstream in(message);
  nlohmann::json term = nlohmann::json::parse(in, nullptr, false);
  REQUIRE(term.is_object());
  CHECK(term["exitCode"] == 5);
  CHECK(term["reason"] == "NumericsFault");
  CHECK(term["message"].get<std::string>().find("not finite") != std::string::npos);
  CHECK(term["lastStep"].get<int64_t>() >= 1);
  // A loss spike (a factor just above 1 trips on ordinary noise) is one too,
  // and lastStep is the last applied step even when few steps are logged.
  r = Worker({"train", "--data", manifest, "--steps", "60", "--layers", "1", "--channels", "32",
              "--heads", "2", "--seq", "16", "--loss-spike-factor", "1.0001", "--log-every", "100",
              "--termination-message-path", message});
  CHECK(r.exit_code == 5);
  CHECK(r.stderr_data.find("spiked above") != std::string::npos);
  std::ifstream in3(message);
  term = nlohmann::json::parse(in3, nullptr, false);
  CHECK(term["reason"] == "NumericsFault");
  CHECK(term["lastStep"].get<int64_t>() > 20);  // Past the detector's warm-up.
  r = Worker({"train", "--data", manifest, "--loss-spike-factor", "0.5"});
  CHECK(r.exit_code == 2);
  CHECK(r.stderr_data.find("loss spike factor") != std::string::npos);
  // And a clean run says so, with its final progress (the last step not
  // logged: the loss comes from the end of the run) for the operator.
  r = Worker({"train", "--data", manifest, "--steps", "3", "--layers", "1", "--channels", "32",
              "--heads", "2", "--seq", "16", "--log-every", "2", "--checkpoint-dir",
              dir.path() + "/ckpt", "--termination-message-path", message});
  CHECK(r.exit_code == 0);
  std::ifstream in2(message);
  term = nlohmann::json::parse(in2, nullptr, false);
  INFO(term.dump());
  CHECK(term["reason"] == "Success");
  CHECK(term["lastStep"] == 3);
  const nlohmann::json& progress = term["progress"];
  CHECK(progress["step"] == 3);
  REQUIRE(progress["loss"].is_number());
  // The loss of step 3, as the done line says (the step lines stop at 2).
  const nlohmann::json done_line = Lines(r.stdout_data).back();
  REQUIRE(done_line["event"] == "done");
  CHECK(progress["loss"] == done_line["loss"]);
  CHECK(progress["validationLoss"] == done_line["valLoss"]);
  CHECK(progress["lastCheckpoint"]["step"] == 3);
  CHECK(progress["lastCheckpoint"]["uri"].get<std::string>().rfind("file://" + dir.path(), 0) == 0);
}

TEST_CASE("kiln-worker train serves its progress as Prometheus metrics while it trains",
          "[worker][train][metrics][process]") {
  kiln::testing::TempDir dir;
  REQUIRE(Worker({"prepare", "--input", "/usr/share/games/fortunes", "--output", dir.path()})
              .exit_code == 0);
  const int port = kiln::testing::FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  kiln::testing::BackgroundProcess worker({KILN_WORKER_BIN,
                                           "train",
                                           "--data",
                                           dir.path() + "/manifest.json",
                                           "--layers",
                                           "1",
                                           "--channels",
                                           "32",
                                           "--heads",
                                           "2",
                                           "--seq",
                                           "16",
                                           "--steps",
                                           "1000000",
                                           "--checkpoint-dir",
                                           dir.path() + "/ckpt",
                                           "--checkpoint-every",
                                           "5",
                                           "--metrics-bind-address",
                                           address},
                                          dir.path() + "/out");
  // Poll until a checkpoint has been written and shows up.
  const std::string none_yet = "kiln_train_checkpoints_total{rank=\"0\"} 0\n";
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = kiln::testing::HttpFetch("http://" + address, "/metrics");
    if (r.ok() && r->status == 200 && r->body.find(none_yet) == std::string::npos) {
      text = r->body;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO(text << "\n" << worker.Output());
  CHECK_THAT(text, Catch::Contains("kiln_train_target_steps{rank=\"0\"} 1000000\n"));
  CHECK_THAT(text, Catch::Contains("kiln_train_last_checkpoint_step{rank=\"0\"} "));
  CHECK_THAT(text, Catch::Contains("kiln_train_mfu{rank=\"0\"} "));
  auto value = [&](const std::string& series) {
    auto at = text.find(series + "{rank=\"0\"} ");
    REQUIRE(at != std::string::npos);
    return std::stod(text.substr(at + series.size() + 10));
  };
  CHECK(value("kiln_train_step") >= 5);
  CHECK(value("kiln_train_last_checkpoint_step") >= 5);
  CHECK(value("kiln_train_loss") > 0);
  CHECK(value("kiln_train_tokens_per_second") > 0);
  const double mfu = value("kiln_train_mfu");
  CHECK(mfu > 0);
  CHECK(mfu < 1);
  auto health = kiln::testing::HttpFetch("http://" + address, "/healthz");
  REQUIRE(health.ok());
  CHECK(health->body == "ok");
  // The same progress as JSON, for the TrainingJob controller.
  auto progress = kiln::testing::HttpFetch("http://" + address, "/progress");
  REQUIRE(progress.ok());
  CHECK(progress->status == 200);
  const auto p = nlohmann::json::parse(progress->body, nullptr, false);
  INFO(progress->body);
  REQUIRE(p.is_object());
  CHECK(p.value("step", 0) >= 5);
  CHECK(p.value("targetSteps", 0) == 1000000);
  CHECK(p.value("loss", 0.0) > 0);
  CHECK_THAT(p["lastCheckpoint"].value("uri", ""), Catch::StartsWith("file://" + dir.path()));
  // The step records carry the same MFU figure.
  CHECK_THAT(worker.Output(), Catch::Contains("\"mfu\":"));
  worker.Signal(SIGTERM);
  CHECK(worker.Wait() == 0);
}

}  // namespace
}  // namespace kiln
