// The serving decoder against the training model's full forward: prefill in
// chunks, then one token at a time through the paged KV cache, gives the
// logits of recomputing the whole sequence; batching sequences together
// changes nothing.
#include "worker/serve/decoder.h"

#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/matmul_bf16.h"
#include "tests/support/random_gpt.h"
namespace kiln::serve {
namespace {

model::Gpt<float> TestModel() { return testing::RandomGpt(2, 3, 48, 40, 99, 0.2f); }

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) {
    seed = seed * 1103515245u + 12345u;
    t.push_back(static_cast<int32_t>((seed >> 16) % 257));
  }
  return t;
}

// Logits [Vp] at the last position of `tokens` by the training forward.
std::vector<float> FullLogits(model::Gpt<float>& m, const std::vector<int32_t>& tokens) {
  const int T = static_cast<int>(tokens.size());
  REQUIRE(m.Forward(tokens.data(), nullptr, 1, T).ok());
  const auto Vp = static_cast<size_t>(m.config().padded_vocab_size);
  auto all = m.logits();
  return std::vector<float>(all.begin() + static_cast<ptrdiff_t>((static_cast<size_t>(T) - 1) * Vp),
                            all.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(T) * Vp));
}

float MaxDiff(std::span<const float> a, std::span<const float> b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

TEST_CASE("decoding through the paged KV cache equals full recomputation", "[serve]") {
  auto m = TestModel();
  const auto V = static_cast<size_t>(m.config().vocab_size);
  PagedKvCache cache(2, 48, /*block_size=*/4, /*num_blocks=*/32);
  CpuDecoder d(m, cache);
  const auto tokens = Tokens(37, 5);
  // Blocks out of order, as a shared pool hands them out.
  std::vector<int> blocks = {9, 2, 30, 7, 0, 15, 4, 22, 11, 5};
  std::vector<float> logits;
  float worst = 0;
  // Prefill 7 tokens in chunks of 3, 3 and 1, then decode the rest one by one.
  int pos = 0;
  for (int n : {3, 3, 1}) {
    SequenceSlice s{
        std::span<const int32_t>(tokens).subspan(static_cast<size_t>(pos), static_cast<size_t>(n)),
        pos, &blocks};
    REQUIRE(d.Forward({&s, 1}, logits).ok());
    pos += n;
    auto want = FullLogits(m, std::vector<int32_t>(tokens.begin(), tokens.begin() + pos));
    worst = std::max(worst, MaxDiff(logits, want, V));
  }
  for (; pos < static_cast<int>(tokens.size()); ++pos) {
    SequenceSlice s{std::span<const int32_t>(tokens).subspan(static_cast<size_t>(pos), 1), pos,
                    &blocks};
    REQUIRE(d.Forward({&s, 1}, logits).ok());
    auto want = FullLogits(m, std::vector<int32_t>(tokens.begin(), tokens.begin() + pos + 1));
    worst = std::max(worst, MaxDiff(logits, want, V));
  }
  INFO("worst |logit difference| " << worst);
  // Same math, different summation order (the training attention keeps the
  // whole T x T matrix): float rounding only, logits are O(1).
  CHECK(worst < 2e-5f);
}

TEST_CASE("sequences batched in one call get the logits they get alone", "[serve]") {
  auto m = TestModel();
  const auto Vp = static_cast<size_t>(m.config().padded_vocab_size);
  PagedKvCache together(2, 48, 8, 16), alone(2, 48, 8, 16);
  CpuDecoder dt(m, together), da(m, alone);
  const auto a = Tokens(13, 1), b = Tokens(5, 2), c = Tokens(1, 3);
  std::vector<int> ba = {0, 1}, bb = {2}, bc = {3};
  std::vector<SequenceSlice> batch = {{a, 0, &ba}, {b, 0, &bb}, {c, 0, &bc}};
  std::vector<float> logits, single;
  REQUIRE(dt.Forward(batch, logits).ok());
  REQUIRE(logits.size() == 3 * Vp);
  for (size_t i = 0; i < batch.size(); ++i) {
    REQUIRE(da.Forward({&batch[i], 1}, single).ok());
    INFO("sequence " << i);
    CHECK(MaxDiff(std::span<const float>(logits).subspan(i * Vp, Vp), single, Vp) < 1e-5f);
  }
}

TEST_CASE("bf16 weights give the float decoder's logits over bf16-rounded matrices", "[serve]") {
  auto round = [](std::span<float> t) {
    for (float& w : t) w = kernels::cpu::Bf16ToFloat(kernels::cpu::FloatToBf16(w));
  };
  // wte is both the embedding (read in float) and the classifier (bf16 in
  // the bf16 decoder): make it bf16-exact in every model, so the two agree.
  auto m = TestModel();
  round(m.param(model::Param::kWte));
  // The same model with the other matrices rounded too, decoded in float.
  auto rounded = TestModel();
  for (model::Param p : {model::Param::kWte, model::Param::kQkvW, model::Param::kAttProjW,
                         model::Param::kFcW, model::Param::kFcProjW}) {
    round(rounded.param(p));
  }
  const auto Vp = static_cast<size_t>(m.config().padded_vocab_size);
  const auto V = static_cast<size_t>(m.config().vocab_size);
  PagedKvCache c16(2, 48, 8, 16), cr(2, 48, 8, 16), cf(2, 48, 8, 16);
  CpuDecoder bf16(m, c16, CpuWeights::kBf16), on_rounded(rounded, cr), exact(m, cf);
  const auto a = Tokens(11, 5), b = Tokens(6, 6);
  std::vector<int> ba = {3, 0}, bb = {1, 2};
  std::vector<SequenceSlice> batch = {{a, 0, &ba}, {b, 0, &bb}};
  std::vector<float> l16, lr, lf;
  REQUIRE(bf16.Forward(batch, l16).ok());
  REQUIRE(on_rounded.Forward(batch, lr).ok());
  REQUIRE(exact.Forward(batch, lf).ok());
  // Same products, another summation order: float rounding only.
  CHECK(MaxDiff(l16, lr, 2 * Vp) < 1e-4f);
  double num = 0, den = 0;
  for (size_t s = 0; s < 2; ++s) {
    for (size_t v = 0; v < V; ++v) {
      num += std::pow(l16[s * Vp + v] - lf[s * Vp + v], 2);
      den += std::pow(lf[s * Vp + v], 2);
    }
  }
  INFO("relative L2 error against float weights " << std::sqrt(num / den));
  // bf16 keeps 8 significant bits: up to 0.4% per weight, averaging out.
  CHECK(std::sqrt(num / den) < 2e-2);
  CHECK(std::sqrt(num / den) > 1e-5);  // The bf16 path is really taken.
}

TEST_CASE("the decoder refuses positions, tokens and block tables it cannot serve", "[serve]") {
  auto m = TestModel();
  PagedKvCache cache(2, 48, 4, 16);
  CpuDecoder d(m, cache);
  std::vector<float> logits;
  std::vector<int> blocks = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<int32_t> one = {5}, bad = {257};
  SequenceSlice beyond{one, 40, &blocks};
  CHECK_THAT(d.Forward({&beyond, 1}, logits).message(), Catch::Contains("context length 40"));
  SequenceSlice token{bad, 0, &blocks};
  CHECK_THAT(d.Forward({&token, 1}, logits).message(), Catch::Contains("outside the vocabulary"));
  std::vector<int> short_table = {0};
  SequenceSlice uncovered{one, 4, &short_table};
  CHECK_THAT(d.Forward({&uncovered, 1}, logits).message(), Catch::Contains("KV-cache blocks"));
  SequenceSlice empty{{}, 0, &blocks};
  CHECK(d.Forward({&empty, 1}, logits).code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::serve
