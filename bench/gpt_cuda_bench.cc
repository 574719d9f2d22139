// Training-step benchmark of kiln's GPU model (worker/model/gpt_cuda.h):
// forward, backward, gradient norm and a clipped AdamW step on random tokens,
// after 3 warm-up steps. Prints ms/step (mean and best, from CUDA events on
// the legacy default stream, which the model's blocking stream orders with),
// tokens/s and MFU: the model FLOPs per token of train::TrainingFlopsPerToken
// (6 per parameter plus attention) over the device's dense bf16 peak
// (train::EstimatedCudaPeakFlops: H100/H200 SXM 989 TFLOP/s) or
// --peak-tflops. Without a GPU it says so and exits 0.
// Usage: gpt_cuda_bench [--peak-tflops X] [LAYERS HEADS CHANNELS SEQ BATCH [STEPS] [VOCAB]]
//   default: GPT-2 124M, 12 12 768 1024 8, 20 steps, vocabulary 50257 (padded to 50304).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "worker/model/gpt_cuda.h"
#include "worker/train/cuda_train_model.h"
#include "worker/train/trainer.h"

namespace {

constexpr int kWarmup = 3;

int Fail(const char* what, const kiln::Status& s) {
  std::fprintf(stderr, "gpt_cuda_bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--peak-tflops X] [LAYERS HEADS CHANNELS SEQ BATCH [STEPS] [VOCAB]]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double peak_tflops = 0;
  std::vector<int> args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--peak-tflops" && i + 1 < argc) {
      peak_tflops = std::atof(argv[++i]);
    } else if (!arg.empty() && arg[0] != '-') {
      args.push_back(std::atoi(argv[i]));
    } else {
      return Usage(argv[0]);
    }
  }
  if (!args.empty() && args.size() < 5) return Usage(argv[0]);
  if (args.empty()) args = {12, 12, 768, 1024, 8};
  kiln::model::GptConfig c;
  c.num_layers = args[0];
  c.num_heads = args[1];
  c.channels = args[2];
  const int T = args[3], B = args[4];
  const int steps = args.size() > 5 ? args[5] : 20;
  c.vocab_size = args.size() > 6 ? args[6] : 50257;
  c.padded_vocab_size = kiln::model::GptConfig::PadVocab(c.vocab_size);
  c.max_seq_len = T;
  if (steps < 1 || T < 1 || B < 1) return Usage(argv[0]);

  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("gpt_cuda_bench: no CUDA device (%s): nothing to measure\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount found 0");
    return 0;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::fprintf(stderr, "gpt_cuda_bench: cannot read device 0's properties\n");
    return 1;
  }
  if (peak_tflops <= 0) peak_tflops = kiln::train::EstimatedCudaPeakFlops(0) / 1e12;

  auto model = kiln::model::GptCuda::Create(c, 1337, 0);
  if (!model.ok()) return Fail("creating the model", model.status());
  std::mt19937 rng(1);
  std::vector<int32_t> inputs(static_cast<size_t>(B) * static_cast<size_t>(T));
  std::vector<int32_t> targets(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = static_cast<int32_t>(rng() % static_cast<unsigned>(c.vocab_size));
    targets[i] = static_cast<int32_t>(rng() % static_cast<unsigned>(c.vocab_size));
  }

  // Event i is recorded before step kWarmup + i, and the last after it.
  std::vector<cudaEvent_t> events(static_cast<size_t>(steps) + 1);
  for (auto& e : events) {
    if (cudaEventCreate(&e) != cudaSuccess) {
      std::fprintf(stderr, "gpt_cuda_bench: cudaEventCreate failed\n");
      return 1;
    }
  }
  float loss = 0;
  for (int s = 1; s <= kWarmup + steps; ++s) {
    const int timed = s - kWarmup - 1;  // Index of this timed step, or < 0 in warm-up.
    if (timed >= 0) cudaEventRecord(events[static_cast<size_t>(timed)], nullptr);
    auto l = model->Forward(inputs.data(), targets.data(), B, T);
    if (!l.ok()) return Fail("Forward", l.status());
    loss = *l;
    if (auto st = model->ZeroGrad(); !st.ok()) return Fail("ZeroGrad", st);
    if (auto st = model->Backward(); !st.ok()) return Fail("Backward", st);
    auto norm = model->GlobalNorm();
    if (!norm.ok()) return Fail("GlobalNorm", norm.status());
    const float scale = *norm > 1.0f ? 1.0f / *norm : 1.0f;
    const kiln::kernels::cpu::AdamWParams adam{
        .learning_rate = 3e-4f, .weight_decay = 0.1f, .step = s};
    if (auto st = model->Update(adam, scale); !st.ok()) return Fail("Update", st);
  }
  cudaEventRecord(events.back(), nullptr);
  if (cudaEventSynchronize(events.back()) != cudaSuccess) {
    std::fprintf(stderr, "gpt_cuda_bench: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  double total_ms = 0, best_ms = 1e30;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, events[i], events[i + 1]);
    total_ms += static_cast<double>(ms);
    best_ms = std::min(best_ms, static_cast<double>(ms));
  }
  for (auto& e : events) cudaEventDestroy(e);
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);

  const double mean_ms = total_ms / steps;
  const double tokens_per_s = static_cast<double>(B) * T / (mean_ms / 1000.0);
  const double flops_per_token = kiln::train::TrainingFlopsPerToken(c, model->num_parameters(), T);
  std::printf(
      "gpt_cuda_bench %s L=%d H=%d C=%d T=%d B=%d V=%d params=%.2fM steps=%d: %.2f ms/step mean, "
      "%.2f best, %.0f tokens/s, %.1f TFLOP/s",
      prop.name, c.num_layers, c.num_heads, c.channels, T, B, c.vocab_size,
      static_cast<double>(model->num_parameters()) / 1e6, steps, mean_ms, best_ms, tokens_per_s,
      flops_per_token * tokens_per_s / 1e12);
  if (peak_tflops > 0) {
    std::printf(", MFU %.1f%% of %.0f TFLOP/s",
                100.0 * flops_per_token * tokens_per_s / 1e12 / peak_tflops, peak_tflops);
  } else {
    std::printf(", MFU unknown (unrecognised device; pass --peak-tflops)");
  }
  std::printf(", %.1f GiB in use, loss %.3f\n",
              static_cast<double>(total_bytes - free_bytes) / (1 << 30), static_cast<double>(loss));
  return 0;
}
