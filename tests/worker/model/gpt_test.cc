// The whole CPU model: its gradient against finite differences in double
// precision for every parameter tensor, the initial loss of a fresh model,
// learning (a repeated batch is memorised), and bad input.
#include "worker/model/gpt.h"

#include <cmath>
#include <random>

#include <catch2/catch.hpp>

namespace kiln::model {
namespace {

GptConfig Tiny() {
  return GptConfig{.max_seq_len = 6,
                   .vocab_size = 11,
                   .padded_vocab_size = 16,
                   .num_layers = 2,
                   .num_heads = 2,
                   .channels = 8};
}

std::vector<int32_t> Tokens(size_t n, uint64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

TEST_CASE("the model's gradient matches finite differences for every tensor", "[model][gpt]") {
  auto g = Gpt<double>::Create(Tiny(), 42);
  REQUIRE(g.ok());
  // Larger weights than GPT-2's 0.02 so every path carries signal.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (auto& p : g->params()) p += normal(rng);
  const int B = 2, T = 5;
  auto in = Tokens(B * T, 11, 1), tg = Tokens(B * T, 11, 2);
  REQUIRE(g->Forward(in.data(), tg.data(), B, T).ok());
  g->ZeroGrad();
  REQUIRE(g->Backward().ok());
  std::vector<double> analytic(g->grads().begin(), g->grads().end());

  const double h = 1e-6;
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    Param p = static_cast<Param>(i);
    std::span<double> w = g->param(p);
    const size_t base = static_cast<size_t>(w.data() - g->params().data());
    double worst = 0;
    // Every element of small tensors; a spread of 64 of larger ones.
    const size_t n = w.size();
    const size_t stride = std::max<size_t>(1, n / 64);
    for (size_t j = 0; j < n; j += stride) {
      const double saved = w[j];
      w[j] = saved + h;
      const double up = *g->Forward(in.data(), tg.data(), B, T);
      w[j] = saved - h;
      const double down = *g->Forward(in.data(), tg.data(), B, T);
      w[j] = saved;
      const double numeric = (up - down) / (2 * h);
      worst = std::max(worst, std::abs(numeric - analytic[base + j]) /
                                  std::max(1e-3, std::abs(numeric) + std::abs(analytic[base + j])));
    }
    INFO(ParamName(p) << ": worst relative error " << worst);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("a fresh model predicts uniformly and learns a repeated batch", "[model][gpt]") {
  GptConfig c = Tiny();
  c.vocab_size = 50;
  c.padded_vocab_size = GptConfig::PadVocab(50);
  c.channels = 32;
  c.num_heads = 4;
  c.max_seq_len = 16;
  auto g = Gpt<float>::Create(c, 1337);
  REQUIRE(g.ok());
  const int B = 4, T = 16;
  auto in = Tokens(B * T, 50, 3), tg = Tokens(B * T, 50, 4);
  float first = *g->Forward(in.data(), tg.data(), B, T);
  CHECK(first == Approx(std::log(50.0f)).epsilon(0.02));  // Small weights: near uniform.
  float loss = first;
  for (int step = 1; step <= 60; ++step) {
    loss = *g->Forward(in.data(), tg.data(), B, T);
    g->ZeroGrad();
    REQUIRE(g->Backward().ok());
    g->Update({.learning_rate = 1e-2f, .weight_decay = 0.0f, .step = step});
  }
  INFO("loss " << first << " -> " << loss);
  CHECK(loss < 0.5f * first);
  // The same seed gives the same model, bit for bit.
  auto a = Gpt<float>::Create(c, 99), b = Gpt<float>::Create(c, 99);
  CHECK(std::equal(a->params().begin(), a->params().end(), b->params().begin()));
}

TEST_CASE("bad configurations and inputs are refused with the reason", "[model][gpt]") {
  GptConfig c = Tiny();
  c.channels = 10;
  c.num_heads = 4;
  CHECK(Gpt<float>::Create(c, 1).status().message().find("multiple of num_heads") !=
        std::string::npos);
  c = Tiny();
  c.padded_vocab_size = 8;
  CHECK(!Gpt<float>::Create(c, 1).ok());
  auto g = Gpt<float>::Create(Tiny(), 1);
  REQUIRE(g.ok());
  std::vector<int32_t> in(7, 1), bad = {1, 2, 11};
  CHECK(g->Forward(in.data(), in.data(), 1, 7).status().message().find("exceeds max_seq_len") !=
        std::string::npos);
  CHECK(g->Forward(bad.data(), nullptr, 1, 3).status().message().find("outside the vocabulary") !=
        std::string::npos);
  REQUIRE(g->Forward(in.data(), nullptr, 1, 6).ok());
  CHECK(g->Backward().code() == StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kiln::model
