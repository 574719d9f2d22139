// GptCuda (worker/model/gpt_cuda.h) against Gpt<float>, the CPU model, on
// small odd shapes (L=2, B=3, T=33, V=257 -> Vp=320; NH=3, C=96, whose head
// size 32 takes the cuBLAS attention, and NH=2, C=128, whose head size 64
// takes the fused kernels of kernels/cuda/flash_attention.h): the same
// initial weights, then the loss, the logits, every parameter gradient and
// the gradient norm of one batch, gradient accumulation, 20 AdamW steps with
// clipping on a repeated batch, the weight-decay mask and the state copies;
// and the loss at two other batch shapes. One Catch2 test case per attention
// path, skipped without a GPU (tests/support/gpu.h); each prints every
// comparison with its error and tolerance.
//
// Tolerances. Both models compute on the same bf16-exact weights (the CPU
// ones are rounded first), so the difference is the GPU's bf16 activations
// and activation gradients: each bf16 store rounds to 2^-9 relative, and a
// value passes through about ten of them between the input and the loss
// (and as many again back to a weight gradient). Rounding errors of that
// size, mostly independent, add up to a few 1e-3 relative L2 error in the
// logits and in each gradient (5e-3 when the kernels' roundings are
// emulated on the CPU); the tolerances leave 4-6x room above that, while a
// wrong index, transpose or missing term costs O(1).
//   loss: relative 1e-2 (the mean over the positions averages the noise)
//   logits: relative L2 error (|got - want| / |want| over the tensor) 2e-2
//   each gradient tensor: relative L2 error 3e-2
//   gradient norm: relative 2e-2
//   accumulation (two Backward(0.5) against one Backward(1)): relative L2
//     1e-6 (halving is exact in bf16, so this is float summation noise)
//   training: every step's loss within 2e-2 relative of the CPU's (AdamW
//     normalises each update, so gradient noise barely moves it; the bf16
//     weight copies differ from their float masters by < 2^-9 relative),
//     and the GPU loss falls below 2/3 of its first value (the CPU's: 5.6
//     -> 2.6)
//   decay mask (zero gradients, zero moments: a pure decay step): relative
//     1e-6 per element (the same float formula on both)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/ops.h"
#include "tests/support/gpu.h"
#include "worker/model/gpt.h"
#include "worker/model/gpt_cuda.h"

namespace kiln::model {
namespace {

constexpr uint64_t kSeed = 1337;
constexpr int kB = 3, kT = 33;
constexpr double kLossRtol = 1e-2;
constexpr double kLogitsRelL2 = 2e-2;
constexpr double kGradRelL2 = 3e-2;
constexpr double kNormRtol = 2e-2;
constexpr double kAccumulationRelL2 = 1e-6;
constexpr double kTrajectoryRtol = 2e-2;
constexpr double kDecayRtol = 1e-6;
constexpr int kSteps = 20;
constexpr double kInfinity = std::numeric_limits<double>::infinity();

GptConfig TestConfig(int heads, int channels) {
  GptConfig c;
  c.max_seq_len = 64;
  c.vocab_size = 257;
  c.padded_vocab_size = GptConfig::PadVocab(c.vocab_size);
  c.num_layers = 2;
  c.num_heads = heads;
  c.channels = channels;
  return c;
}

// x rounded to the nearest bf16, ties to even (finite x).
float RoundBf16(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof(u));
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

double RelL2(std::span<const float> got, std::span<const float> want) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    err += d * d;
    norm += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  if (norm == 0) return err == 0 ? 0 : kInfinity;
  return std::sqrt(err / norm);
}

double RelErr(double got, double want) { return std::abs(got - want) / std::abs(want); }

// Prints "<what>: <error> (tolerance <tol>) ok|FAILED"; NaN fails.
bool Check(const std::string& what, double error, double tolerance) {
  const bool ok = error <= tolerance;
  std::printf("  %-34s %.3e (tolerance %.1e) %s\n", what.c_str(), error, tolerance,
              ok ? "ok" : "FAILED");
  return ok;
}

bool Ok(const std::string& what, const Status& s) {
  if (s.ok()) return true;
  std::printf("  %s: FAILED: %s\n", what.c_str(), s.ToString().c_str());
  return false;
}

bool ExpectCode(const std::string& what, const Status& s, StatusCode code) {
  const bool ok = s.code() == code;
  std::printf("  %-34s %s %s\n", what.c_str(), s.ToString().c_str(), ok ? "ok" : "FAILED");
  return ok;
}

// The span of tensor p inside a flat Param-layout buffer.
std::span<const float> Tensor(Gpt<float>& layout, const std::vector<float>& flat, Param p) {
  const auto offset = static_cast<size_t>(layout.param(p).data() - layout.params().data());
  return std::span<const float>(flat).subspan(offset, layout.param(p).size());
}

struct Batch {
  std::vector<int32_t> inputs, targets;
};

Batch RandomBatch(int vocab) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  Batch b;
  b.inputs.resize(static_cast<size_t>(kB * kT));
  b.targets.resize(b.inputs.size());
  for (auto& t : b.inputs) t = token(rng);
  for (auto& t : b.targets) t = token(rng);
  return b;
}

bool TestInitialisation(Gpt<float>& cpu, GptCuda& gpu) {
  std::printf("initialisation:\n");
  const auto n = static_cast<size_t>(cpu.num_parameters());
  if (gpu.num_parameters() != cpu.num_parameters()) {
    std::printf("  FAILED: %lld parameters on the GPU, %lld on the CPU\n",
                static_cast<long long>(gpu.num_parameters()),
                static_cast<long long>(cpu.num_parameters()));
    return false;
  }
  std::vector<float> params(n), m(n), v(n);
  if (!Ok("CopyStateToHost", gpu.CopyStateToHost(params, m, v))) return false;
  const bool same = std::memcmp(params.data(), cpu.params().data(), n * sizeof(float)) == 0;
  std::printf("  %-34s %s\n", "parameters bitwise equal", same ? "ok" : "FAILED");
  return same;
}

bool TestErrors(GptCuda& gpu, const Batch& batch) {
  std::printf("errors:\n");
  bool ok = ExpectCode("Backward before Forward", gpu.Backward(), StatusCode::kFailedPrecondition);
  ok = ExpectCode("Forward with T > max_seq_len",
                  gpu.Forward(batch.inputs.data(), batch.targets.data(), 1, 65).status(),
                  StatusCode::kInvalidArgument) &&
       ok;
  std::vector<int32_t> bad = batch.targets;
  bad[5] = 257;
  ok = ExpectCode("Forward with a target >= V",
                  gpu.Forward(batch.inputs.data(), bad.data(), kB, kT).status(),
                  StatusCode::kInvalidArgument) &&
       ok;
  std::vector<float> short_buffer(10);
  return ExpectCode("LoadStateFromHost of a wrong size",
                    gpu.LoadStateFromHost(short_buffer, short_buffer, short_buffer),
                    StatusCode::kInvalidArgument) &&
         ok;
}

// One forward and backward on both; leaves the GPU's gradients in *grads.
bool TestForwardBackward(Gpt<float>& cpu, GptCuda& gpu, const Batch& batch,
                         std::vector<float>* grads) {
  std::printf("forward and backward:\n");
  auto cpu_loss = cpu.Forward(batch.inputs.data(), batch.targets.data(), kB, kT);
  auto gpu_loss = gpu.Forward(batch.inputs.data(), batch.targets.data(), kB, kT);
  if (!Ok("CPU Forward", cpu_loss.status()) || !Ok("GPU Forward", gpu_loss.status())) return false;
  std::printf("  loss: CPU %.6f, GPU %.6f\n", static_cast<double>(*cpu_loss),
              static_cast<double>(*gpu_loss));
  bool ok = Check("loss (relative)", RelErr(*gpu_loss, *cpu_loss), kLossRtol);
  auto logits = gpu.Logits();
  if (!Ok("Logits", logits.status())) return false;
  if (logits->size() != cpu.logits().size()) {
    std::printf("  logits: FAILED: %zu values, want %zu\n", logits->size(), cpu.logits().size());
    return false;
  }
  ok = Check("logits (relative L2)", RelL2(*logits, cpu.logits()), kLogitsRelL2) && ok;

  cpu.ZeroGrad();
  if (!Ok("CPU Backward", cpu.Backward()) || !Ok("GPU ZeroGrad", gpu.ZeroGrad()) ||
      !Ok("GPU Backward", gpu.Backward())) {
    return false;
  }
  ok = ExpectCode("a second Backward", gpu.Backward(), StatusCode::kFailedPrecondition) && ok;
  ok =
      ExpectCode("Logits after Backward", gpu.Logits().status(), StatusCode::kFailedPrecondition) &&
      ok;
  grads->assign(static_cast<size_t>(gpu.num_parameters()), 0.0f);
  if (!Ok("CopyGradsToHost", gpu.CopyGradsToHost(*grads))) return false;
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    const auto p = static_cast<Param>(i);
    ok = Check(std::string("grad ") + ParamName(p) + " (relative L2)",
               RelL2(Tensor(cpu, *grads, p), cpu.grad(p)), kGradRelL2) &&
         ok;
  }
  const double cpu_norm = kernels::cpu::GlobalNorm(cpu.grads().data(), cpu.num_parameters());
  auto gpu_norm = gpu.GlobalNorm();
  if (!Ok("GlobalNorm", gpu_norm.status())) return false;
  std::printf("  gradient norm: CPU %.6f, GPU %.6f\n", cpu_norm, static_cast<double>(*gpu_norm));
  return Check("gradient norm (relative)", RelErr(*gpu_norm, cpu_norm), kNormRtol) && ok;
}

// Two Forward + Backward(0.5) accumulate the gradients of one Backward(1),
// and the forward is deterministic.
bool TestAccumulation(GptCuda& gpu, const Batch& batch, const std::vector<float>& full) {
  std::printf("gradient accumulation:\n");
  if (!Ok("ZeroGrad", gpu.ZeroGrad())) return false;
  float losses[2] = {};
  for (float& loss : losses) {
    auto l = gpu.Forward(batch.inputs.data(), batch.targets.data(), kB, kT);
    if (!Ok("Forward", l.status()) || !Ok("Backward(0.5)", gpu.Backward(0.5f))) return false;
    loss = *l;
  }
  const bool same_loss = losses[0] == losses[1];
  std::printf("  %-34s %.9g, %.9g %s\n", "repeated forward bitwise equal",
              static_cast<double>(losses[0]), static_cast<double>(losses[1]),
              same_loss ? "ok" : "FAILED");
  std::vector<float> accumulated(full.size());
  if (!Ok("CopyGradsToHost", gpu.CopyGradsToHost(accumulated))) return false;
  return Check("2 x 0.5 vs 1 (relative L2)", RelL2(accumulated, full), kAccumulationRelL2) &&
         same_loss;
}

// A smaller batch (the activations are laid out anew inside the arena) and
// a larger one (the arena grows) give the CPU's losses too.
bool TestOtherShapes(Gpt<float>& cpu, GptCuda& gpu) {
  std::printf("other batch shapes:\n");
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> token(0, cpu.config().vocab_size - 1);
  bool ok = true;
  for (const auto& [B, T] : {std::pair{1, 17}, std::pair{4, 40}}) {
    std::vector<int32_t> inputs(static_cast<size_t>(B * T)), targets(inputs.size());
    for (auto& t : inputs) t = token(rng);
    for (auto& t : targets) t = token(rng);
    auto cpu_loss = cpu.Forward(inputs.data(), targets.data(), B, T);
    auto gpu_loss = gpu.Forward(inputs.data(), targets.data(), B, T);
    if (!Ok("CPU Forward", cpu_loss.status()) || !Ok("GPU Forward", gpu_loss.status())) {
      return false;
    }
    ok = Check("loss at B=" + std::to_string(B) + " T=" + std::to_string(T) + " (relative)",
               RelErr(*gpu_loss, *cpu_loss), kLossRtol) &&
         ok;
  }
  return ok;
}

// kSteps of AdamW with clipping on the same batch, the CPU way (the trainer
// scales the gradients) and the GPU way (grad_scale).
bool TestTraining(Gpt<float>& cpu, GptCuda& gpu, const Batch& batch) {
  std::printf("training, %d AdamW steps on one batch:\n", kSteps);
  constexpr double kClip = 1.5;
  std::vector<float> cpu_losses, gpu_losses;
  double worst = 0;
  for (int step = 1; step <= kSteps; ++step) {
    const kernels::cpu::AdamWParams adam{
        .learning_rate = 1e-3f, .weight_decay = 0.1f, .step = step};
    auto cpu_loss = cpu.Forward(batch.inputs.data(), batch.targets.data(), kB, kT);
    if (!Ok("CPU Forward", cpu_loss.status())) return false;
    cpu.ZeroGrad();
    if (!Ok("CPU Backward", cpu.Backward())) return false;
    const double cpu_norm = kernels::cpu::GlobalNorm(cpu.grads().data(), cpu.num_parameters());
    if (cpu_norm > kClip) {
      const auto scale = static_cast<float>(kClip / cpu_norm);
      for (float& g : cpu.grads()) g *= scale;
    }
    cpu.Update(adam);

    auto gpu_loss = gpu.Forward(batch.inputs.data(), batch.targets.data(), kB, kT);
    if (!Ok("GPU Forward", gpu_loss.status()) || !Ok("GPU ZeroGrad", gpu.ZeroGrad()) ||
        !Ok("GPU Backward", gpu.Backward())) {
      return false;
    }
    auto gpu_norm = gpu.GlobalNorm();
    if (!Ok("GPU GlobalNorm", gpu_norm.status())) return false;
    const float scale = static_cast<double>(*gpu_norm) > kClip
                            ? static_cast<float>(kClip / static_cast<double>(*gpu_norm))
                            : 1.0f;
    if (!Ok("GPU Update", gpu.Update(adam, scale))) return false;

    const double err = RelErr(*gpu_loss, *cpu_loss);
    worst = std::max(worst, err);
    std::printf("  step %2d: loss CPU %.5f GPU %.5f (relative %.2e), norm CPU %.4f GPU %.4f\n",
                step, static_cast<double>(*cpu_loss), static_cast<double>(*gpu_loss), err, cpu_norm,
                static_cast<double>(*gpu_norm));
    cpu_losses.push_back(*cpu_loss);
    gpu_losses.push_back(*gpu_loss);
  }
  bool ok = Check("worst step's loss (relative)", worst, kTrajectoryRtol);
  const double fall = static_cast<double>(gpu_losses.back() / gpu_losses.front());
  return Check("GPU last loss / first loss", fall, 2.0 / 3.0) && ok;
}

// With zero gradients and moments, one AdamW step only decays: the GPU must
// decay exactly the tensors the CPU model does.
bool TestDecayMask(Gpt<float>& cpu, GptCuda& gpu) {
  std::printf("weight-decay mask:\n");
  const auto n = static_cast<size_t>(cpu.num_parameters());
  std::vector<float> params(n), m(n), v(n), zeros(n, 0.0f);
  if (!Ok("CopyStateToHost", gpu.CopyStateToHost(params, m, v)) ||
      !Ok("LoadStateFromHost", gpu.LoadStateFromHost(params, zeros, zeros)) ||
      !Ok("ZeroGrad", gpu.ZeroGrad())) {
    return false;
  }
  std::copy(params.begin(), params.end(), cpu.params().begin());
  std::fill(cpu.adam_m().begin(), cpu.adam_m().end(), 0.0f);
  std::fill(cpu.adam_v().begin(), cpu.adam_v().end(), 0.0f);
  cpu.ZeroGrad();
  const kernels::cpu::AdamWParams adam{.learning_rate = 0.1f, .weight_decay = 0.5f, .step = 1};
  cpu.Update(adam);
  if (!Ok("GPU Update", gpu.Update(adam))) return false;
  std::vector<float> after(n);
  if (!Ok("CopyStateToHost", gpu.CopyStateToHost(after, m, v))) return false;
  bool ok = true;
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    const auto p = static_cast<Param>(i);
    const auto got = Tensor(cpu, after, p), before = Tensor(cpu, params, p);
    const std::span<const float> want = cpu.param(p);
    double worst = 0;
    bool decayed = false;
    for (size_t j = 0; j < want.size(); ++j) {
      decayed = decayed || want[j] != before[j];
      const double err = std::abs(static_cast<double>(got[j]) - static_cast<double>(want[j]));
      const double allowed = kDecayRtol * std::abs(static_cast<double>(want[j]));
      worst = std::max(worst, err == 0 ? 0.0 : (allowed == 0 ? kInfinity : err / allowed));
    }
    ok = Check(std::string(ParamName(p)) + (decayed ? " (decayed)" : " (not decayed)") +
                   ", of tolerance",
               worst, 1.0) &&
         ok;
  }
  return ok;
}

bool TestStateRoundTrip(GptCuda& gpu) {
  std::printf("state round trip:\n");
  const auto n = static_cast<size_t>(gpu.num_parameters());
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> state[3] = {std::vector<float>(n), std::vector<float>(n),
                                 std::vector<float>(n)};
  for (auto& s : state) {
    for (float& x : s) x = normal(rng);
  }
  if (!Ok("LoadStateFromHost", gpu.LoadStateFromHost(state[0], state[1], state[2]))) return false;
  std::vector<float> back[3] = {std::vector<float>(n), std::vector<float>(n),
                                std::vector<float>(n)};
  if (!Ok("CopyStateToHost", gpu.CopyStateToHost(back[0], back[1], back[2]))) return false;
  bool same = true;
  for (int i = 0; i < 3; ++i) {
    same = same && std::memcmp(state[i].data(), back[i].data(), n * sizeof(float)) == 0;
  }
  std::printf("  %-34s %s\n", "params, m, v bitwise equal", same ? "ok" : "FAILED");
  return same;
}

bool RunConfig(const GptConfig& config) {
  std::printf("== L=%d NH=%d C=%d (head size %d: %s attention)\n", config.num_layers,
              config.num_heads, config.channels, config.channels / config.num_heads,
              config.channels / config.num_heads == 64 ? "fused" : "unfused");
  auto cpu = Gpt<float>::Create(config, kSeed);
  auto gpu = GptCuda::Create(config, kSeed, 0);
  if (!Ok("Gpt<float>::Create", cpu.status()) || !Ok("GptCuda::Create", gpu.status())) return false;
  const Batch batch = RandomBatch(config.vocab_size);

  bool ok = TestInitialisation(*cpu, *gpu);
  // From here both compute on the same bf16-exact weights (what the GPU reads).
  for (float& x : cpu->params()) x = RoundBf16(x);
  if (!Ok("LoadStateFromHost",
          gpu->LoadStateFromHost(cpu->params(), cpu->adam_m(), cpu->adam_v()))) {
    return false;
  }
  ok = TestErrors(*gpu, batch) && ok;
  std::vector<float> grads;
  const bool forward_backward = TestForwardBackward(*cpu, *gpu, batch, &grads);
  ok = forward_backward && ok;
  if (forward_backward) ok = TestAccumulation(*gpu, batch, grads) && ok;
  ok = TestOtherShapes(*cpu, *gpu) && ok;
  ok = TestTraining(*cpu, *gpu, batch) && ok;
  ok = TestDecayMask(*cpu, *gpu) && ok;
  ok = TestStateRoundTrip(*gpu) && ok;
  return ok;
}

// Runs RunConfig(config) once the CPU reference is known to run here.
void Run(const GptConfig& config) {
  const Status cpu = kernels::cpu::CheckCpuSupport();
  INFO("the CPU reference cannot run here: " << cpu.ToString());
  REQUIRE(cpu.ok());
  CHECK(RunConfig(config));
}

}  // namespace

// Head size 32 takes the cuBLAS attention.
TEST_CASE("cublas_attention", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestConfig(3, 96));
}

// Head size 64 takes the fused kernels.
TEST_CASE("fused_attention", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestConfig(2, 128));
}

}  // namespace kiln::model
