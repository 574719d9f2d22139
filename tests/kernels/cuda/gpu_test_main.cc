// The GPU kernel tests: each kernel of kernels/cuda against its CPU reference
// in kernels/cpu/ops.h, with a tolerance stated in its test. Usage:
//   kiln_cuda_kernels_gpu_test [TEST...]   (default: all; names below)
// Exits 77, which CTest reports as skipped, when there is no CUDA device (or
// it is older than the sm_90 this build targets), before any test runs.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/support/cuda_device.h"

namespace {

namespace t = kiln::kernels::cuda::test;

struct NamedTest {
  const char* name;
  bool (*run)(cudaStream_t);
};

constexpr NamedTest kTests[] = {
    {"encoder", t::TestEncoder},
    {"layernorm", t::TestLayerNorm},
    {"matmul", t::TestMatmul},
    {"attention", t::TestAttention},
    {"gelu", t::TestGelu},
    {"classifier", t::TestClassifier},
    {"adamw", t::TestAdamW},
    {"global_norm", t::TestGlobalNorm},
    {"flash_attention", t::TestFlashAttention},
};

const NamedTest* Find(const char* name) {
  for (const NamedTest& test : kTests) {
    if (std::strcmp(test.name, name) == 0) return &test;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<const NamedTest*> selected;
  for (int i = 1; i < argc; ++i) {
    const NamedTest* test = Find(argv[i]);
    if (test == nullptr) {
      std::fprintf(stderr, "unknown test '%s'; tests:", argv[i]);
      for (const NamedTest& known : kTests) std::fprintf(stderr, " %s", known.name);
      std::fprintf(stderr, "\n");
      return 2;
    }
    selected.push_back(test);
  }
  if (selected.empty()) {
    for (const NamedTest& test : kTests) selected.push_back(&test);
  }

  const std::string no_device = kiln::testing::NoCudaDeviceReason();
  if (!no_device.empty()) {
    std::printf("SKIPPED: no CUDA device: %s\n", no_device.c_str());
    return 77;
  }
  if (kiln::Status s = kiln::kernels::cpu::CheckCpuSupport(); !s.ok()) {
    std::printf("FAILED: the CPU reference cannot run here: %s\n", s.ToString().c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  if (cudaSetDevice(0) != cudaSuccess || cudaGetDeviceProperties(&prop, 0) != cudaSuccess ||
      cudaStreamCreate(&stream) != cudaSuccess) {
    std::printf("FAILED: cannot set up device 0: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  int failed = 0;
  for (const NamedTest* test : selected) {
    std::printf("%s:\n", test->name);
    const bool ok = test->run(stream);
    std::printf("%s: %s\n", test->name, ok ? "PASSED" : "FAILED");
    if (!ok) ++failed;
  }
  cudaStreamDestroy(stream);
  std::printf("%d passed, %d failed\n", static_cast<int>(selected.size()) - failed, failed);
  return failed == 0 ? 0 : 1;
}
