// CPU training-step benchmark of kiln's GPT engine: forward, backward and
// AdamW on random tokens, reporting ms/step and tokens/s after warm-up.
// Usage: gpt_cpu_bench LAYERS HEADS CHANNELS SEQ BATCH [STEPS] [VOCAB]
//   e.g. gpt_cpu_bench 4 4 128 64 4      and    gpt_cpu_bench 6 6 384 256 8
// Threads: OMP_NUM_THREADS (default: all cores).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "worker/model/gpt.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s LAYERS HEADS CHANNELS SEQ BATCH [STEPS] [VOCAB]\n", argv[0]);
    return 2;
  }
  kiln::model::GptConfig c;
  c.num_layers = std::atoi(argv[1]);
  c.num_heads = std::atoi(argv[2]);
  c.channels = std::atoi(argv[3]);
  const int T = std::atoi(argv[4]), B = std::atoi(argv[5]);
  const int steps = argc > 6 ? std::atoi(argv[6]) : 20;
  c.vocab_size = argc > 7 ? std::atoi(argv[7]) : 50257;
  c.padded_vocab_size = kiln::model::GptConfig::PadVocab(c.vocab_size);
  c.max_seq_len = T;
  auto model = kiln::model::Gpt<float>::Create(c, 1337);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 2;
  }
  std::mt19937 rng(1);
  std::vector<int32_t> in(static_cast<size_t>(B) * static_cast<size_t>(T)), tg(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<int32_t>(rng() % static_cast<unsigned>(c.vocab_size));
    tg[i] = static_cast<int32_t>(rng() % static_cast<unsigned>(c.vocab_size));
  }
  const int warmup = 2;
  double total_ms = 0, best_ms = 1e30;
  float loss = 0;
  for (int s = 1; s <= warmup + steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    loss = *model->Forward(in.data(), tg.data(), B, T);
    model->ZeroGrad();
    (void)model->Backward();
    model->Update({.learning_rate = 1e-4f, .weight_decay = 0.0f, .step = s});
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s > warmup) {
      total_ms += ms;
      best_ms = std::min(best_ms, ms);
    }
  }
  const double mean_ms = total_ms / steps;
  std::printf(
      "gpt_cpu_bench L=%d H=%d C=%d T=%d B=%d V=%d params=%.2fM threads=%d: %.1f ms/step mean, "
      "%.1f best, %.0f tokens/s, loss %.3f\n",
      c.num_layers, c.num_heads, c.channels, T, B, c.vocab_size,
      static_cast<double>(model->num_parameters()) / 1e6, omp_get_max_threads(), mean_ms, best_ms,
      static_cast<double>(B) * T / (mean_ms / 1000.0), static_cast<double>(loss));
  return 0;
}
