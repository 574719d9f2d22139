// kernels/cpu/paged_attention.h and the serving rows of ops.h (EmbedRows,
// GatherRows) against the training reference: rows of several sequences
// whose keys and values sit in scattered cache blocks must attend exactly as
// cpu::AttentionForward over each sequence's contiguous qkv. Tolerance 1e-6
// absolute (outputs are of order 0.1 to 1): the two sum the same float
// products in different orders and take exp differently (VectorExp is within
// 2 ulp); the worst seen is 1.2e-7, a wrong block, row or head costs 0.1.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/ops.h"
#include "tests/kernels/paged_batch.h"

namespace kiln::kernels::cpu {
namespace {

// Sizes and indices from the tests' int arithmetic.
std::size_t U(int64_t x) { return static_cast<std::size_t>(x); }

std::vector<float> Random(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Checks the rows' attention against AttentionForward on each sequence alone.
void Check(const test::PagedShape& shape) {
  const int C = shape.C, NH = shape.NH;
  std::mt19937 rng(static_cast<unsigned>(C * 31 + static_cast<int>(shape.lengths.size())));
  const test::PagedBatch b =
      test::MakePagedBatch(shape, rng, [&](std::size_t n) { return Random(n, rng); });
  std::vector<float> cache = b.cache;
  AppendKv(cache.data(), b.qkv.data(), b.slot.data(), b.N, shape.block_size, C);
  std::vector<float> out(U(int64_t{b.N} * C));
  PagedAttentionForward(out.data(), b.qkv.data(), cache.data(), b.row_seq.data(), b.row_pos.data(),
                        b.tables.data(), b.width, b.N, shape.block_size, C, NH);
  double worst = 0;
  for (int r = 0; r < b.N; ++r) {
    const int s = b.row_seq[U(r)], t = b.row_pos[U(r)];
    const int T = shape.lengths[U(s)];
    std::vector<float> want(U(int64_t{T} * C)), preatt(U(int64_t{NH} * T * T)), att(preatt.size());
    AttentionForward(want.data(), preatt.data(), att.data(), b.seq_qkv[U(s)].data(), 1, T, C, NH);
    for (int c = 0; c < C; ++c) {
      worst = std::max(worst, static_cast<double>(std::abs(out[U(int64_t{r} * C + c)] -
                                                           want[U(int64_t{t} * C + c)])));
    }
  }
  INFO(shape.Name() << ": worst difference " << worst);
  CHECK(worst <= 1e-6);
}

TEST_CASE("PagedAttentionForward matches AttentionForward through scattered blocks",
          "[kernels][paged_attention]") {
  for (const test::PagedShape& shape : test::PagedShapes()) Check(shape);
}

TEST_CASE("AppendKv writes keys and values at their slots", "[kernels][paged_attention]") {
  constexpr int C = 4, bs = 3, kBlocks = 3;
  std::vector<float> cache(U(kBlocks * 2 * bs * C), 0.0f);
  std::vector<float> qkv(2 * 3 * C);
  std::iota(qkv.begin(), qkv.end(), 1.0f);
  const std::vector<int32_t> slot = {7, 2};  // Block 2 row 1; block 0 row 2.
  AppendKv(cache.data(), qkv.data(), slot.data(), 2, bs, C);
  for (int c = 0; c < C; ++c) {
    CHECK(cache[U(((2 * 2 + 0) * bs + 1) * C + c)] == qkv[U(C + c)]);
    CHECK(cache[U(((2 * 2 + 1) * bs + 1) * C + c)] == qkv[U(2 * C + c)]);
    CHECK(cache[U(((0 * 2 + 0) * bs + 2) * C + c)] == qkv[U(3 * C + C + c)]);
    CHECK(cache[U(((0 * 2 + 1) * bs + 2) * C + c)] == qkv[U(3 * C + 2 * C + c)]);
  }
  const auto written = std::count_if(cache.begin(), cache.end(), [](float x) { return x != 0; });
  CHECK(written == 4 * C);
}

TEST_CASE("EmbedRows is EncoderForward at explicit positions", "[kernels]") {
  constexpr int T = 9, C = 12, V = 20;
  std::mt19937 rng(3);
  const auto wte = Random(U(V * C), rng), wpe = Random(U(T * C), rng);
  std::vector<int32_t> tokens(T), pos(T);
  for (int t = 0; t < T; ++t) {
    tokens[U(t)] = static_cast<int32_t>((t * 7 + 3) % V);
    pos[U(t)] = t;
  }
  std::vector<float> want(U(T * C)), got(want.size());
  EncoderForward(want.data(), tokens.data(), wte.data(), wpe.data(), 1, T, C);
  EmbedRows(got.data(), tokens.data(), pos.data(), wte.data(), wpe.data(), T, C);
  CHECK(got == want);
  // Rows in any order: row r at position pos[r].
  std::reverse(pos.begin(), pos.end());
  std::reverse(tokens.begin(), tokens.end());
  EmbedRows(got.data(), tokens.data(), pos.data(), wte.data(), wpe.data(), T, C);
  for (int r = 0; r < T; ++r) {
    const auto want_row = want.begin() + static_cast<int64_t>(T - 1 - r) * C;
    CHECK(std::equal(want_row, want_row + C, got.begin() + static_cast<int64_t>(r) * C));
  }
}

TEST_CASE("GatherRows picks rows", "[kernels]") {
  constexpr int C = 3;
  std::vector<float> in(5 * C);
  std::iota(in.begin(), in.end(), 0.0f);
  const std::vector<int32_t> rows = {4, 0, 4};
  std::vector<float> out(rows.size() * C);
  GatherRows(out.data(), in.data(), rows.data(), 3, C);
  CHECK(out == std::vector<float>{12, 13, 14, 0, 1, 2, 12, 13, 14});
}

}  // namespace
}  // namespace kiln::kernels::cpu
