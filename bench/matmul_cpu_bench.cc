// The CPU forward matmul (kernels/cpu/ops.h MatmulForward, float weights)
// at the serving decoder's shapes, with the weights hot (one matrix, called
// again and again: it stays in L2) and cold (a rotation of matrices that
// together exceed the L3, as a forward that reads each layer's weights once
// finds them). Prints the median time of 40 calls per matrix and GFLOP/s.
// Usage: matmul_cpu_bench [N C OC [MATRICES]]
//   no arguments: N 1, 8, 18 and 64 at the 288-channel model's shapes
//   (qkv 288x864, fc 288x1152, fc-proj 1152x288), hot and with 24 matrices.
// Threads: OMP_NUM_THREADS (default: all cores).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {

void Run(int N, int C, int OC, int matrices) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  const auto S = [](int64_t n) { return static_cast<size_t>(n); };
  std::vector<std::vector<float>> weights(S(matrices), std::vector<float>(S(int64_t{C} * OC)));
  for (auto& w : weights) std::generate(w.begin(), w.end(), [&] { return normal(rng); });
  std::vector<float> x(S(int64_t{N} * C)), bias(S(OC)), out(S(int64_t{N} * OC));
  std::generate(x.begin(), x.end(), [&] { return normal(rng); });
  std::vector<double> seconds;
  for (int r = 0; r < 40 * matrices; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    kiln::kernels::cpu::MatmulForward(out.data(), x.data(), weights[S(r % matrices)].data(),
                                      bias.data(), N, C, OC);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  std::printf("N=%-3d C=%-5d OC=%-5d %-4s (%5.1f MB of weights) %8.1f us %7.1f GFLOP/s\n", N, C, OC,
              matrices == 1 ? "hot" : "cold",
              static_cast<double>(matrices) * C * OC * sizeof(float) / 1e6, median * 1e6,
              2.0 * N * C * OC / median / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("# matmul_cpu_bench, %d threads\n", omp_get_max_threads());
  if (argc >= 4) {
    const int N = std::atoi(argv[1]), C = std::atoi(argv[2]), OC = std::atoi(argv[3]);
    const int matrices = argc > 4 ? std::atoi(argv[4]) : 1;
    if (N < 1 || C < 1 || OC < 1 || matrices < 1) {
      std::fprintf(stderr, "usage: %s [N C OC [MATRICES]] (all positive)\n", argv[0]);
      return 2;
    }
    Run(N, C, OC, matrices);
    return 0;
  }
  for (int N : {1, 8, 18, 64}) {
    for (auto [C, OC] : {std::pair{288, 864}, std::pair{288, 1152}, std::pair{1152, 288}}) {
      Run(N, C, OC, 1);
      Run(N, C, OC, 24);
    }
  }
  return 0;
}
