// The serving sampler (worker/serve/sampler.h) on random logits: microseconds
// per sampled token for a vocabulary, with every token a candidate and with
// top-k 40 and top-p 0.95, as the engine calls it once per sequence and step
// on its one thread.
// Usage: sampler_bench [VOCAB ...]   (default: 257 and 50257, GPT-2's)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "worker/serve/sampler.h"

namespace {

void Run(int vocab, const char* name, const kiln::serve::SamplingParams& params) {
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::generate(logits.begin(), logits.end(), [&] { return normal(gen); });
  kiln::serve::Rng rng(1);
  // About a second's worth at the slowest, at least 20 draws.
  const int draws = std::max(20, 20000000 / vocab);
  int64_t checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < draws; ++i) checksum += kiln::serve::Sample(logits, params, rng);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      draws;
  std::printf("vocab %6d  %-32s %10.2f us per token  (%d draws, checksum %lld)\n", vocab, name, us,
              draws, static_cast<long long>(checksum));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> vocabs;
  for (int i = 1; i < argc; ++i) {
    const int v = std::atoi(argv[i]);
    if (v < 2) {
      std::fprintf(stderr, "usage: %s [VOCAB ...] (each at least 2)\n", argv[0]);
      return 2;
    }
    vocabs.push_back(v);
  }
  if (vocabs.empty()) vocabs = {257, 50257};
  for (int v : vocabs) {
    Run(v, "temperature 0.8", {.temperature = 0.8});
    Run(v, "temperature 0.8, top-k 40", {.temperature = 0.8, .top_k = 40});
    Run(v, "temperature 0.8, top-p 0.95", {.temperature = 0.8, .top_p = 0.95});
  }
  return 0;
}
