// `kiln-worker convert`, as a process: a trained kiln checkpoint to an llm.c
// model file and back gives the same weights bit for bit, a converted model
// starts a new training run from those weights, and bad requests exit with
// the documented codes.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/worker_process.h"
#include "worker/train/load_model.h"

namespace kiln {
namespace {

using testing::Worker;

// The first step record and whether a "resumed" record came before it.
std::pair<nlohmann::json, bool> FirstStep(const std::string& out) {
  std::istringstream in(out);
  bool resumed = false;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "resumed") resumed = true;
    if (j["event"] == "step") return {j, resumed};
  }
  return {nlohmann::json(), resumed};
}

std::vector<float> Params(const std::string& path) {
  auto loaded = train::LoadModel(path, "", [](const std::string&) {});
  REQUIRE(loaded.ok());
  return std::vector<float>(loaded->model.params().begin(), loaded->model.params().end());
}

TEST_CASE("kiln-worker convert moves a trained model to llm.c's format and back",
          "[worker][train][llmc][process]") {
  testing::TempDir dir;
  REQUIRE(
      Worker({"prepare", "--input", "/usr/share/games/fortunes", "--output", dir.path() + "/data"})
          .exit_code == 0);
  const std::vector<std::string> shape = {"--data",     dir.path() + "/data/manifest.json",
                                          "--layers",   "1",
                                          "--channels", "32",
                                          "--heads",    "2",
                                          "--seq",      "32",
                                          "--batch",    "4",
                                          "--lr",       "3e-3"};
  auto train = [&](const std::string& ckpt, const std::string& steps) {
    std::vector<std::string> args = {"train", "--steps",          steps, "--log-every",
                                     "100",   "--checkpoint-dir", ckpt};
    args.insert(args.end(), shape.begin(), shape.end());
    return Worker(args);
  };
  const std::string a = dir.path() + "/a", bin = dir.path() + "/model.bin", b = dir.path() + "/b";
  REQUIRE(train(a, "60").exit_code == 0);

  auto to_llmc = Worker({"convert", "--input", a, "--output", bin});
  INFO(to_llmc.stderr_data);
  REQUIRE(to_llmc.exit_code == 0);
  auto report = nlohmann::json::parse(to_llmc.stdout_data);
  CHECK(report["inputFormat"] == "kiln");
  CHECK(report["outputFormat"] == "llmc");
  auto to_kiln = Worker({"convert", "--input", bin, "--output", b});
  INFO(to_kiln.stderr_data);
  REQUIRE(to_kiln.exit_code == 0);
  CHECK(nlohmann::json::parse(to_kiln.stdout_data)["outputFormat"] == "kiln");
  CHECK((Params(a) == Params(b)));
  CHECK((Params(bin) == Params(a)));

  // A run in the converted directory starts from those weights (step 0):
  // its first loss is the trained model's, far below a fresh model's.
  auto fine_tune = train(b, "2");
  INFO(fine_tune.stderr_data);
  REQUIRE(fine_tune.exit_code == 0);
  auto [tuned, resumed] = FirstStep(fine_tune.stdout_data);
  CHECK(resumed);
  auto fresh = train(dir.path() + "/fresh", "2");
  REQUIRE(fresh.exit_code == 0);
  auto [scratch, fresh_resumed] = FirstStep(fresh.stdout_data);
  CHECK_FALSE(fresh_resumed);
  CHECK(tuned["loss"].get<double>() < scratch["loss"].get<double>() - 1.0);

  // bf16 output; refusals.
  auto b16 = Worker({"convert", "--input", a, "--output", dir.path() + "/m16.bin", "--bf16"});
  CHECK(b16.exit_code == 0);
  CHECK(std::filesystem::file_size(dir.path() + "/m16.bin") - 1024 ==
        (std::filesystem::file_size(bin) - 1024) / 2);
  auto again = Worker({"convert", "--input", bin, "--output", b});
  CHECK(again.exit_code == 2);
  CHECK_THAT(again.stderr_data, Catch::Contains("already holds checkpoints"));
  auto wrong = Worker({"convert", "--input", a, "--output", dir.path() + "/x", "--to", "onnx"});
  CHECK(wrong.exit_code == 2);
  CHECK_THAT(wrong.stderr_data, Catch::Contains("--to: \"onnx\" is not one of kiln, llmc"));
  auto bf16_kiln = Worker({"convert", "--input", bin, "--output", dir.path() + "/y", "--bf16"});
  CHECK(bf16_kiln.exit_code == 2);
  auto missing = Worker({"convert", "--input", dir.path() + "/none", "--output", bin});
  CHECK(missing.exit_code == 6);
  std::ofstream(dir.path() + "/junk.bin") << "not a model";
  auto junk = Worker({"convert", "--input", dir.path() + "/junk.bin", "--output", bin});
  CHECK(junk.exit_code == 6);
}

}  // namespace
}  // namespace kiln
