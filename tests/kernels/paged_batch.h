// A test batch for the paged-attention kernels (kernels/cpu/paged_attention.h
// and its CUDA twin): several sequences whose positions live in scattered
// cache blocks, the earlier positions already in the cache (appended with
// cpu::AppendKv, as a previous call would have), and this call's rows. The
// CPU unit test and the GPU test build the same batches. Not thread-safe.
#ifndef KILN_TESTS_KERNELS_PAGED_BATCH_H_
#define KILN_TESTS_KERNELS_PAGED_BATCH_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/paged_attention.h"

namespace kiln::kernels::test {

struct PagedShape {
  int C, NH, block_size;
  std::vector<int> lengths;  // Positions each sequence holds after the call.
  std::vector<int> fresh;    // How many of them are the call's rows (the last ones).

  std::string Name() const {
    std::string n = "C=" + std::to_string(C) + " NH=" + std::to_string(NH) +
                    " block=" + std::to_string(block_size) + " lengths";
    for (int l : lengths) n += " " + std::to_string(l);
    n += " new";
    for (int f : fresh) n += " " + std::to_string(f);
    return n;
  }
};

struct PagedBatch {
  int num_blocks = 0, width = 0, N = 0;
  std::vector<int32_t> tables;                  // [sequences, width]; padding entries are block 0.
  std::vector<int32_t> row_seq, row_pos, slot;  // By row.
  std::vector<float> cache;                 // [num_blocks][K|V][block_size][C], earlier positions.
  std::vector<float> qkv;                   // [N, 3C]: the call's rows.
  std::vector<std::vector<float>> seq_qkv;  // Per sequence, [length, 3C]: all its positions.
};

// `random(n)` gives n values for qkv (the GPU test's are bf16-exact). Block 0
// is never handed out; tables are one entry wider than the longest needs.
inline PagedBatch MakePagedBatch(const PagedShape& shape, std::mt19937& rng,
                                 const std::function<std::vector<float>(std::size_t)>& random) {
  auto U = [](int64_t x) { return static_cast<std::size_t>(x); };
  const int C = shape.C, bs = shape.block_size, S = static_cast<int>(shape.lengths.size());
  PagedBatch b;
  std::vector<int> blocks_of(U(S));
  b.num_blocks = 1;
  b.width = 1;
  for (int s = 0; s < S; ++s) {
    blocks_of[U(s)] = (shape.lengths[U(s)] + bs - 1) / bs;
    b.num_blocks += blocks_of[U(s)];
    b.width = std::max(b.width, blocks_of[U(s)] + 1);
  }
  std::vector<int32_t> pool(U(b.num_blocks - 1));
  std::iota(pool.begin(), pool.end(), 1);
  std::shuffle(pool.begin(), pool.end(), rng);
  b.tables.assign(U(int64_t{S} * b.width), 0);
  for (int s = 0, next = 0; s < S; ++s) {
    for (int k = 0; k < blocks_of[U(s)]; ++k) b.tables[U(s * b.width + k)] = pool[U(next++)];
  }
  // Unwritten rows are zero: the kernels must never read them (a wrong row
  // shows as a wrong output, not as NaN that every comparison would flag).
  b.cache.assign(U(int64_t{b.num_blocks} * 2 * bs * C), 0.0f);
  for (int s = 0; s < S; ++s) {
    const int T = shape.lengths[U(s)];
    b.seq_qkv.push_back(random(U(int64_t{T} * 3 * C)));
    const std::vector<float>& all = b.seq_qkv.back();
    for (int t = 0; t < T; ++t) {
      const int32_t slot = b.tables[U(s * b.width + t / bs)] * bs + t % bs;
      const float* row = all.data() + int64_t{t} * 3 * C;
      if (t < T - shape.fresh[U(s)]) {
        cpu::AppendKv(b.cache.data(), row, &slot, 1, bs, C);
      } else {
        b.row_seq.push_back(s);
        b.row_pos.push_back(t);
        b.slot.push_back(slot);
        b.qkv.insert(b.qkv.end(), row, row + 3 * C);
      }
    }
  }
  b.N = static_cast<int>(b.row_seq.size());
  return b;
}

// The shapes both tests run: context length 1; lengths that are and are not
// multiples of the block; decode rows beside a prefill chunk that crosses
// blocks; head sizes 16 to 128, one not a multiple of 8; blocks of 1 and 5.
inline std::vector<PagedShape> PagedShapes() {
  return {
      {64, 4, 16, {1}, {1}},
      {64, 4, 16, {16}, {1}},
      {96, 3, 8, {1, 7, 16, 37}, {1, 1, 1, 1}},
      {96, 3, 8, {21, 40, 9}, {1, 13, 9}},
      {60, 5, 7, {50, 2}, {5, 2}},
      {32, 2, 1, {12, 5}, {3, 1}},
      {256, 2, 5, {200, 3, 64}, {1, 3, 1}},
      // Long rows beside short ones: many splits on the GPU's split path,
      // with splits past the short rows' ends.
      {128, 2, 16, {700, 3, 129}, {1, 1, 2}},
      {64, 8, 16, {1024}, {1}},
      // The serving benchmark's head size (48), with runs of 4 positions
      // and their remainders inside blocks.
      {288, 6, 16, {131, 1, 22, 6}, {1, 1, 18, 2}},
  };
}

}  // namespace kiln::kernels::test

#endif  // KILN_TESTS_KERNELS_PAGED_BATCH_H_
