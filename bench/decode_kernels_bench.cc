// Microbenchmark of the serving decoder's kernels (kernels/cuda: EmbedRows,
// AppendKv, PagedAttentionForward, GatherRows, FloatToBf16) at GPT-2 124M
// decode shapes: each of B sequences decodes one token, its context (the
// positions attended, its own included) of T positions in 16-position blocks
// scattered over the cache. Per kernel and shape: the mean time per call (one
// layer where the kernel runs per layer) over 20 calls after 3 warm-up calls,
// and the effective GB/s — the bytes it must move at least (the attention
// reads each row's T keys and T values once) over the time — against the
// device's peak. Without a GPU it says so and exits 0.
// Usage: decode_kernels_bench   (B in 1 8 32 64, T in 128 256 512 1024;
// C=768, NH=12, block 16, context 1024, 124,475,904 parameters).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/gather.h"
#include "kernels/cuda/paged_attention.h"

namespace {

namespace k = kiln::kernels::cuda;
using k::bf16;
using kiln::bench::Arena;
using kiln::bench::Bench;

constexpr int C = 768, NH = 12, kBlock = 16, kContext = 1024, Vp = 50304, L = 12;
constexpr int kBatches[] = {1, 8, 32, 64};
constexpr int kContexts[] = {128, 256, 512, 1024};

// Device copy of `host` in the arena.
int32_t* Put(Arena& arena, const std::vector<int32_t>& host) {
  int32_t* d = arena.Take<int32_t>(static_cast<int64_t>(host.size()));
  if (cudaMemcpy(d, host.data(), host.size() * sizeof(int32_t), cudaMemcpyHostToDevice) !=
      cudaSuccess) {
    std::fprintf(stderr, "cudaMemcpy: %s\n", cudaGetErrorString(cudaGetLastError()));
    std::exit(1);
  }
  return d;
}

std::string Shape(const char* kernel, int B, int T = 0) {
  std::string s = std::string(kernel) + " B=" + std::to_string(B);
  return T > 0 ? s + " T=" + std::to_string(T) : s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: %s\n", argv[0]);
    return 2;
  }
  const std::string no_device = kiln::bench::NoDevice();
  if (!no_device.empty()) {
    std::printf("decode_kernels_bench: no CUDA device (%s); nothing to measure\n",
                no_device.c_str());
    return 0;
  }
  const double peak_gbs = kiln::bench::OpenDevice("decode_kernels_bench", argc, argv);
  if (peak_gbs < 0) return 1;
  const int64_t params =
      int64_t{Vp} * C + int64_t{kContext} * C + L * (12LL * C * C + 13LL * C) + 2 * C;
  std::printf(
      "shape: C=%d NH=%d block %d, context %d, %lld parameters; per layer; mean of %d calls "
      "after %d warm-up\n",
      C, NH, kBlock, kContext, static_cast<long long>(params), kiln::bench::kIters,
      kiln::bench::kWarmup);
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) return 1;
  Arena arena;
  Bench bench(stream, peak_gbs);
  constexpr int kMaxB = 64;
  constexpr double dC = C;

  // The cache of one layer: room for kMaxB sequences of kContext positions,
  // handed out as a shuffled pool (as the engine's free stack ends up).
  constexpr int kWidth = kContext / kBlock, kBlocks = kMaxB * kWidth;
  std::vector<int32_t> pool(kBlocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(1));
  auto* cache = arena.Take<bf16>(int64_t{kBlocks} * 2 * kBlock * C);
  auto* tables = Put(arena, pool);  // Sequence s: pool[s * kWidth ...].
  auto* wte = arena.Take<bf16>(int64_t{Vp} * C);
  auto* wpe = arena.Take<bf16>(int64_t{kContext} * C);
  auto* x = arena.Take<bf16>(int64_t{kMaxB} * C);
  auto* qkv = arena.Take<bf16>(int64_t{kMaxB} * 3 * C);
  auto* out = arena.Take<bf16>(int64_t{kMaxB} * C);
  std::vector<int32_t> seq(kMaxB), tokens(kMaxB);
  std::iota(seq.begin(), seq.end(), 0);
  for (int s = 0; s < kMaxB; ++s) tokens[static_cast<std::size_t>(s)] = (s * 7919) % 50257;
  auto* d_seq = Put(arena, seq);  // Row r is sequence r; also GatherRows' rows.
  auto* d_tokens = Put(arena, tokens);

  const int64_t work_floats = k::PagedAttentionWorkspaceFloats(kMaxB, C, NH, kContext);
  auto* work = arena.Take<float>(std::max<int64_t>(work_floats, 1));
  for (const int B : kBatches) {
    const double dB = B;
    // Every row at the last position of the longest context.
    const std::vector<int32_t> last(static_cast<std::size_t>(B), kContext - 1);
    std::vector<int32_t> slot(static_cast<std::size_t>(B));
    for (int s = 0; s < B; ++s) {
      slot[static_cast<std::size_t>(s)] =
          pool[static_cast<std::size_t>(s * kWidth + (kContext - 1) / kBlock)] * kBlock +
          (kContext - 1) % kBlock;
    }
    auto* d_last = Put(arena, last);
    auto* d_slot = Put(arena, slot);
    bench.Bandwidth(Shape("embed_rows", B), dB * (3 * dC * 2 + 8),
                    [&] { return k::EmbedRows(x, d_tokens, d_last, wte, wpe, B, C, stream); });
    bench.Bandwidth(Shape("append_kv", B), dB * (4 * dC * 2 + 4),
                    [&] { return k::AppendKv(cache, qkv, d_slot, B, kBlock, C, stream); });
    for (const int T : kContexts) {
      const std::vector<int32_t> pos(static_cast<std::size_t>(B), T - 1);
      auto* d_pos = Put(arena, pos);
      // Keys and values of T positions, the query, the output and the table.
      const double bytes = dB * (2.0 * T * dC * 2 + 2 * dC * 2 + 4.0 * T / kBlock + 8);
      // With the workspace (split over positions when few rows), then
      // without (one block per row and head), side by side.
      bench.Bandwidth(Shape("paged_attention", B, T), bytes, [&] {
        return k::PagedAttentionForward(out, qkv, cache, d_seq, d_pos, tables, kWidth, B, kBlock, C,
                                        NH, kContext, stream, work, work_floats);
      });
      bench.Bandwidth(Shape("paged_attention one pass", B, T), bytes, [&] {
        return k::PagedAttentionForward(out, qkv, cache, d_seq, d_pos, tables, kWidth, B, kBlock, C,
                                        NH, kContext, stream);
      });
    }
    bench.Bandwidth(Shape("gather_rows", B), dB * (2 * dC * 2 + 4),
                    [&] { return k::GatherRows(out, x, d_seq, B, C, stream); });
  }
  // Once per model load (and per optimizer step in training).
  auto* master = arena.Take<float>(params);
  auto* copy = arena.Take<bf16>(params);
  bench.Bandwidth("float_to_bf16 (all parameters)", 6.0 * static_cast<double>(params),
                  [&] { return k::FloatToBf16(copy, master, params, stream); });

  cudaStreamDestroy(stream);
  return bench.failed() ? 1 : 0;
}
