// kernels/cuda/global_norm.h against cpu::GlobalNorm (accumulated in double).
// Tolerance rtol 1e-5, atol 0: the GPU sums each thread's share and each
// block in float (a few hundred terms, about 1e-6 relative) and the partials
// in double. Three runs must give bitwise the same norm.
#include <cstdio>
#include <cstring>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/global_norm.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

bool Run(cudaStream_t stream, int64_t n) {
  std::printf(" n=%lld\n", static_cast<long long>(n));
  std::mt19937 rng(static_cast<unsigned>(n));
  const auto x = RandomFloat(static_cast<std::size_t>(n), -1, 1, rng);
  const auto want = static_cast<float>(cpu::GlobalNorm(x.data(), n));
  auto d_x = Upload(x);
  DeviceArray<float> d_norm(1), scratch(GlobalNormScratchFloats());
  std::vector<float> runs;
  for (int run = 0; run < 3; ++run) {
    if (!Ok("GlobalNorm", GlobalNorm(d_norm.get(), d_x.get(), n, scratch.get(), stream)) ||
        !Sync(stream)) {
      return false;
    }
    runs.push_back(Download(d_norm)[0]);
  }
  bool ok = Compare("norm", {runs[0]}, {want}, Tolerance{1e-5, 0});
  const bool same = std::memcmp(&runs[0], &runs[1], sizeof(float)) == 0 &&
                    std::memcmp(&runs[0], &runs[2], sizeof(float)) == 0;
  std::printf("  bitwise equal over 3 runs: %s\n", same ? "ok" : "FAILED");
  return same && ok;
}

}  // namespace

bool TestGlobalNorm(cudaStream_t stream) {
  // 1000: one partial block, partly filled; 1000003: the full grid with a
  // grid-stride loop and a ragged end; 40000001: long per-thread loops.
  bool ok = Run(stream, 1000);
  ok = Run(stream, 1000003) && ok;
  return Run(stream, 40000001) && ok;
}

}  // namespace kiln::kernels::cuda::test
