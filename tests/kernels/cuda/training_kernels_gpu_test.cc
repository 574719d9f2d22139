// The training kernels' GPU tests (the Test* functions of gpu_check.h, one
// per kernels/cuda header, each against its CPU reference in
// kernels/cpu/ops.h with the tolerance stated in its file) as Catch2 test
// cases, one per kernel: skipped without a GPU (tests/support/gpu.h).
#include <catch2/catch.hpp>

#include "kernels/cpu/cpu_features.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/support/gpu.h"

namespace kiln::kernels::cuda::test {
namespace {

// Runs `test` on a fresh stream; it prints what it compares.
void Run(bool (*test)(cudaStream_t)) {
  const Status cpu = cpu::CheckCpuSupport();
  INFO("the CPU reference cannot run here: " << cpu.ToString());
  REQUIRE(cpu.ok());
  testing::CudaStream stream;
  CHECK(test(stream.get()));
}

}  // namespace

TEST_CASE("encoder", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestEncoder);
}

TEST_CASE("layernorm", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestLayerNorm);
}

TEST_CASE("matmul", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestMatmul);
}

TEST_CASE("attention", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestAttention);
}

TEST_CASE("gelu", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestGelu);
}

TEST_CASE("classifier", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestClassifier);
}

TEST_CASE("adamw", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestAdamW);
}

TEST_CASE("global_norm", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestGlobalNorm);
}

TEST_CASE("flash_attention", "[gpu]") {
  KILN_REQUIRE_GPU();
  Run(TestFlashAttention);
}

}  // namespace kiln::kernels::cuda::test
