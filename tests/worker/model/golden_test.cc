// The CPU model against an independent reference: reference/gpt_reference.py
// is a float64 NumPy GPT-2 written from the math, with a hand-derived
// backward. For one model and batch it produces golden logits, every gradient
// tensor and the loss over a few AdamW steps; Gpt<double> must match them to
// rounding error and Gpt<float> to float precision.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/subprocess.h"
#include "tests/support/temp_dir.h"
#include "worker/model/gpt.h"

namespace kiln::model {
namespace {

// Differences are taken relative to the largest golden magnitude of each
// tensor. Double: both sides are float64 and differ only in summation order
// (observed at most 2e-15), while a wrong constant or formula shows at 1e-9 or
// above. Float: float32 arithmetic throughout (observed at most 1.2e-6).
constexpr double kDoubleTolerance = 1e-12;
constexpr double kFloatTolerance = 1e-5;

constexpr int kBatch = 3, kSeqLen = 7, kSteps = 4;
constexpr float kLearningRates[kSteps] = {1e-2f, 8e-3f, 6e-3f, 4e-3f};
constexpr float kWeightDecay = 0.1f;

// Nothing round for a bug to hide behind: V=57 padded to 64 (the padding
// columns must not reach the loss), T=7 inside a context of 9 (unused
// positions get no gradient), three heads of 8 channels.
GptConfig Config() {
  return GptConfig{.max_seq_len = 9,
                   .vocab_size = 57,
                   .padded_vocab_size = GptConfig::PadVocab(57),
                   .num_layers = 2,
                   .num_heads = 3,
                   .channels = 24};
}

static_assert(std::endian::native == std::endian::little,
              "the reference reads and writes little-endian files");

struct Golden {
  std::vector<double> params;  // Exactly representable as float, so both models start equal.
  std::vector<int32_t> inputs, targets;
  std::vector<double> logits, grads, losses;
};

template <class T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <class T>
StatusOr<std::vector<T>> ReadArray(const std::string& path, size_t count) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (bytes.size() != count * sizeof(T)) {
    return Status::DataLoss(path + ": " + std::to_string(bytes.size()) + " bytes, expected " +
                            std::to_string(count * sizeof(T)));
  }
  std::vector<T> v(count);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// Builds the model and batch, writes them out, and runs the reference on them.
StatusOr<Golden> RunReference() {
  const std::string python = KILN_NUMPY_PYTHON;
  if (python.empty()) {
    return Status::FailedPrecondition(
        "no python3 that can import numpy was found when CMake configured the build: run "
        "scripts/setup.sh, then configure again");
  }
  const GptConfig c = Config();
  KILN_ASSIGN_OR_RETURN(auto model, Gpt<double>::Create(c, 8191));
  // Larger weights than GPT-2's initialisation so every path carries signal;
  // the padding rows of the embedding are non-zero too.
  std::mt19937_64 rng(4099);
  std::normal_distribution<double> normal(0.0, 0.25);
  Golden g;
  for (double p : model.params()) g.params.push_back(static_cast<float>(p + normal(rng)));
  for (auto* tokens : {&g.inputs, &g.targets}) {
    for (int i = 0; i < kBatch * kSeqLen; ++i) {
      tokens->push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(c.vocab_size)));
    }
  }
  g.inputs[5] = g.targets[11] = c.vocab_size - 1;  // The last real row is used both ways.

  nlohmann::json adam = {{"beta1", double{kernels::cpu::AdamWParams{}.beta1}},
                         {"beta2", double{kernels::cpu::AdamWParams{}.beta2}},
                         {"eps", double{kernels::cpu::AdamWParams{}.eps}},
                         {"weight_decay", double{kWeightDecay}},
                         {"lr", nlohmann::json::array()}};
  for (float lr : kLearningRates) adam["lr"].push_back(double{lr});
  const nlohmann::json config = {{"L", c.num_layers}, {"NH", c.num_heads},
                                 {"C", c.channels},   {"maxT", c.max_seq_len},
                                 {"V", c.vocab_size}, {"Vp", c.padded_vocab_size},
                                 {"B", kBatch},       {"T", kSeqLen},
                                 {"steps", kSteps},   {"adam", adam}};

  testing::TempDir dir;
  dir.Write("config.json", config.dump());
  dir.Write("params.bin", Bytes(g.params));
  dir.Write("inputs.bin", Bytes(g.inputs));
  dir.Write("targets.bin", Bytes(g.targets));
  const std::string script =
      std::string(KILN_SOURCE_DIR) + "/tests/worker/model/reference/gpt_reference.py";
  KILN_ASSIGN_OR_RETURN(ProcessResult run, RunProcess({.argv = {python, script, dir.path()},
                                                       .timeout = std::chrono::minutes(2)}));
  if (run.exit_code != 0) {
    return Status::Internal(python + " " + script + " exited " + std::to_string(run.exit_code) +
                            ": " + run.stderr_data);
  }
  const std::string out = dir.path() + "/";
  KILN_ASSIGN_OR_RETURN(g.logits, ReadArray<double>(out + "golden_logits.bin",
                                                    size_t{kBatch * kSeqLen} *
                                                        static_cast<size_t>(c.padded_vocab_size)));
  KILN_ASSIGN_OR_RETURN(g.grads, ReadArray<double>(out + "golden_grads.bin", g.params.size()));
  KILN_ASSIGN_OR_RETURN(std::string losses, ReadFile(out + "golden_losses.json"));
  try {
    g.losses = nlohmann::json::parse(losses).at("losses").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss("golden_losses.json: " + std::string(e.what()));
  }
  if (g.losses.size() != kSteps) return Status::DataLoss("golden_losses.json: wrong step count");
  return g;
}

// The reference runs once per test process.
const Golden& Reference() {
  static const StatusOr<Golden> golden = RunReference();
  if (!golden.ok()) FAIL("the NumPy reference could not run: " << golden.status().message());
  return *golden;
}

template <class F>
StatusOr<Gpt<F>> ModelAt(const Golden& golden) {
  KILN_ASSIGN_OR_RETURN(auto model, Gpt<F>::Create(Config(), 1));
  std::copy(golden.params.begin(), golden.params.end(), model.params().begin());
  return model;
}

// max |got - want| over max |want|.
template <class F>
double ScaledMaxDiff(std::span<const F> got, std::span<const double> want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / std::max(scale, 1e-300);
}

template <class F>
void CheckForwardBackward(double tolerance) {
  const Golden& golden = Reference();
  auto model = ModelAt<F>(golden);
  REQUIRE(model.ok());
  auto loss = model->Forward(golden.inputs.data(), golden.targets.data(), kBatch, kSeqLen);
  REQUIRE(loss.ok());
  model->ZeroGrad();
  REQUIRE(model->Backward().ok());

  const double logits_diff = ScaledMaxDiff(model->logits(), std::span(golden.logits));
  INFO("logits: scaled max difference " << logits_diff);
  CHECK(logits_diff <= tolerance);
  const double loss_diff = std::abs(double{*loss} - golden.losses[0]) / golden.losses[0];
  INFO("loss " << *loss << ", golden " << golden.losses[0] << ", relative difference "
               << loss_diff);
  CHECK(loss_diff <= tolerance);

  std::span<const double> golden_grads(golden.grads);
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    const Param p = static_cast<Param>(i);
    const std::span<F> grad = model->grad(p);
    const size_t offset = static_cast<size_t>(grad.data() - model->grads().data());
    const double diff = ScaledMaxDiff<F>(grad, golden_grads.subspan(offset, grad.size()));
    INFO("gradient of " << ParamName(p) << ": scaled max difference " << diff);
    CHECK(diff <= tolerance);
  }
}

template <class F>
void CheckAdamWSteps(double tolerance) {
  const Golden& golden = Reference();
  auto model = ModelAt<F>(golden);
  REQUIRE(model.ok());
  for (int step = 1; step <= kSteps; ++step) {
    auto loss = model->Forward(golden.inputs.data(), golden.targets.data(), kBatch, kSeqLen);
    REQUIRE(loss.ok());
    const double want = golden.losses[static_cast<size_t>(step - 1)];
    const double diff = std::abs(double{*loss} - want) / want;
    INFO("loss before update " << step << ": " << *loss << ", golden " << want
                               << ", relative difference " << diff);
    CHECK(diff <= tolerance);
    model->ZeroGrad();
    REQUIRE(model->Backward().ok());
    model->Update(
        {.learning_rate = kLearningRates[step - 1], .weight_decay = kWeightDecay, .step = step});
  }
}

TEST_CASE("the double model matches the NumPy reference's logits, loss and gradients",
          "[model][golden][process]") {
  CheckForwardBackward<double>(kDoubleTolerance);
}

TEST_CASE("the double model follows the NumPy reference's loss through AdamW steps",
          "[model][golden][process]") {
  CheckAdamWSteps<double>(kDoubleTolerance);
}

TEST_CASE("the float model matches the NumPy reference within float precision",
          "[model][golden][process]") {
  CheckForwardBackward<float>(kFloatTolerance);
  CheckAdamWSteps<float>(kFloatTolerance);
}

}  // namespace
}  // namespace kiln::model
