// The Catch2 side of kiln's GPU tests. KILN_REQUIRE_GPU() opens a GPU test
// case: without a device that can run this build's sm_90 code it ends the
// test case at once with the warning "SKIPPED: no CUDA device: <why>", which
// CTest turns into a skip (tests/CMakeLists.txt registers GPU test cases with
// that SKIP_REGULAR_EXPRESSION; Catch2 2.13 has no SKIP of its own).
// KILN_REQUIRE_GPUS(n, what) opens a multi-GPU test case: it also skips, with
// "SKIPPED: only <k> GPU here; <what>", when fewer than n GPUs are visible.
// CTest skips a test whose output matches, whatever its exit code, so a test
// case that skips must check nothing else.
// CudaStream is a test's stream. For test executables linked with cudart;
// not thread-safe.
#ifndef KILN_TESTS_SUPPORT_GPU_H_
#define KILN_TESTS_SUPPORT_GPU_H_

#include <cuda_runtime.h>

#include <string>

#include <catch2/catch.hpp>

#include "tests/support/cuda_device.h"

namespace kiln::testing {

// A CUDA stream on device 0, created and destroyed with the object. A
// failure to create it fails the test case.
class CudaStream {
 public:
  CudaStream() {
    REQUIRE(cudaSetDevice(0) == cudaSuccess);
    const cudaError_t err = cudaStreamCreate(&stream_);
    INFO("cudaStreamCreate: " << cudaGetErrorString(err));
    REQUIRE(err == cudaSuccess);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace kiln::testing

// Returns from the enclosing TEST_CASE (skipped) when there is no usable GPU.
#define KILN_REQUIRE_GPU()                                                     \
  do {                                                                         \
    if (const std::string kiln_no_gpu = ::kiln::testing::NoCudaDeviceReason(); \
        !kiln_no_gpu.empty()) {                                                \
      WARN("SKIPPED: no CUDA device: " << kiln_no_gpu);                        \
      return;                                                                  \
    }                                                                          \
  } while (false)

// Returns from the enclosing TEST_CASE (skipped) when there is no usable GPU
// or fewer than `n`; `what` (streamed into the warning) says what the test
// would have checked with them.
#define KILN_REQUIRE_GPUS(n, what)                                                   \
  do {                                                                               \
    KILN_REQUIRE_GPU();                                                              \
    if (const int kiln_gpus = ::kiln::testing::CudaDeviceCount(); kiln_gpus < (n)) { \
      WARN("SKIPPED: only " << kiln_gpus << " GPU here; " << what);                  \
      return;                                                                        \
    }                                                                                \
  } while (false)

#endif  // KILN_TESTS_SUPPORT_GPU_H_
