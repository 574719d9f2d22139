// kernels/cpu/paged_attention.h and the serving rows of ops.h (EmbedRows,
// GatherRows) against the training reference: rows of several sequences
// whose keys and values sit in scattered cache blocks must attend exactly as
// cpu::AttentionForward over each sequence's contiguous qkv. Tolerance 1e-5
// absolute: the two sum the same float products in different orders and
// take exp differently (VectorExp is within 2 ulp).
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/ops.h"

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

struct Shape {
  int C, NH, block_size;
  std::vector<int> lengths;  // Positions each sequence holds after the call.
  std::vector<int> fresh;    // How many of them the call appends (its rows).
};

std::string Name(const Shape& s) {
  std::string n = "C=" + std::to_string(s.C) + " NH=" + std::to_string(s.NH) +
                  " block=" + std::to_string(s.block_size) + " lengths";
  for (int l : s.lengths) n += " " + std::to_string(l);
  return n;
}

// Appends every sequence's positions (the earlier ones as a previous call
// would have, then this call's rows) and checks the rows' attention against
// AttentionForward on the sequence alone.
void Check(const Shape& shape) {
  const int C = shape.C, NH = shape.NH, bs = shape.block_size;
  const int S = static_cast<int>(shape.lengths.size());
  std::mt19937 rng(static_cast<unsigned>(C * 31 + S));
  std::vector<int> blocks_of(U(S));
  int num_blocks = 1;  // Block 0 stays unused: a table padding entry.
  int width = 1;
  for (int s = 0; s < S; ++s) {
    blocks_of[U(s)] = (shape.lengths[U(s)] + bs - 1) / bs;
    num_blocks += blocks_of[U(s)];
    width = std::max(width, blocks_of[U(s)] + 1);
  }
  // Scattered block ids: a shuffled pool handed out in turn.
  std::vector<int32_t> pool(U(num_blocks - 1));
  std::iota(pool.begin(), pool.end(), 1);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> tables(U(S * width), 0);
  for (int s = 0, next = 0; s < S; ++s) {
    for (int b = 0; b < blocks_of[U(s)]; ++b) {
      tables[U(s * width + b)] = pool[U(next++)];
    }
  }
  std::vector<float> cache(U(int64_t{num_blocks} * 2 * bs * C), NAN);
  std::vector<std::vector<float>> seq_qkv;
  std::vector<int32_t> row_seq, row_pos, slot;
  std::vector<float> qkv;  // This call's rows.
  for (int s = 0; s < S; ++s) {
    const int T = shape.lengths[U(s)];
    seq_qkv.push_back(Random(U(int64_t{T} * 3 * C), rng));
    const std::vector<float>& all = seq_qkv.back();
    const int first_new = T - shape.fresh[U(s)];
    for (int t = 0; t < T; ++t) {
      const int32_t sl = tables[U(s * width + t / bs)] * bs + t % bs;
      const float* row = all.data() + int64_t{t} * 3 * C;
      if (t < first_new) {
        AppendKv(cache.data(), row, &sl, 1, bs, C);
      } else {
        row_seq.push_back(s);
        row_pos.push_back(t);
        slot.push_back(sl);
        qkv.insert(qkv.end(), row, row + 3 * C);
      }
    }
  }
  const int N = static_cast<int>(row_seq.size());
  AppendKv(cache.data(), qkv.data(), slot.data(), N, bs, C);
  std::vector<float> out(U(int64_t{N} * C));
  PagedAttentionForward(out.data(), qkv.data(), cache.data(), row_seq.data(), row_pos.data(),
                        tables.data(), width, N, bs, C, NH);

  double worst = 0;
  for (int r = 0; r < N; ++r) {
    const int s = row_seq[U(r)], t = row_pos[U(r)];
    const int T = shape.lengths[U(s)];
    std::vector<float> want(U(int64_t{T} * C)), preatt(U(int64_t{NH} * T * T)), att(preatt.size());
    AttentionForward(want.data(), preatt.data(), att.data(), seq_qkv[U(s)].data(), 1, T, C, NH);
    for (int c = 0; c < C; ++c) {
      worst = std::max(worst, static_cast<double>(std::abs(out[U(int64_t{r} * C + c)] -
                                                           want[U(int64_t{t} * C + c)])));
    }
  }
  INFO(Name(shape) << ": worst difference " << worst);
  CHECK(worst <= 1e-5);
}

TEST_CASE("PagedAttentionForward matches AttentionForward through scattered blocks",
          "[kernels][paged_attention]") {
  // Context length 1; lengths that are and are not multiples of the block;
  // decode rows beside a prefill chunk that crosses blocks; a block of one.
  Check({64, 4, 16, {1}, {1}});
  Check({64, 4, 16, {16}, {1}});
  Check({96, 3, 8, {1, 7, 16, 37}, {1, 1, 1, 1}});
  Check({96, 3, 8, {21, 40, 9}, {1, 13, 9}});
  Check({60, 5, 7, {50, 2}, {5, 2}});
  Check({32, 2, 1, {12, 5}, {3, 1}});
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
