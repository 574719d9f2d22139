// What the GPU kernel tests share: bf16 rounding on the host, random inputs
// that CPU and GPU see identically, device arrays, and the tolerance check
// that prints one line per compared tensor. Not thread-safe (the tests run
// one at a time).
#ifndef KILN_TESTS_KERNELS_CUDA_GPU_CHECK_H_
#define KILN_TESTS_KERNELS_CUDA_GPU_CHECK_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda::test {

// x rounded to the nearest bf16 (ties to even), as __float2bfloat16_rn
// (kernels/cpu/matmul_bf16.h's FloatToBf16).
float RoundBf16(float x);

// n values uniform in [lo, hi); the Bf16 ones are rounded to bf16, so the CPU
// reference computes on exactly the values the GPU reads.
std::vector<float> RandomBf16(std::size_t n, float lo, float hi, std::mt19937& rng);
std::vector<float> RandomFloat(std::size_t n, float lo, float hi, std::mt19937& rng);
std::vector<int32_t> RandomTokens(std::size_t n, int vocab, std::mt19937& rng);

// Device memory owned by a test. Allocation failures abort the test binary
// with the CUDA error: they say the machine is broken, not the kernel.
// `misalign` starts the data one element past a 256-byte boundary, so the
// kernels take their unvectorised path.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n, bool misalign = false);
  DeviceArray(DeviceArray&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)), data_(other.data_), size_(other.size_) {}
  DeviceArray& operator=(DeviceArray&&) = delete;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray();

  T* get() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  T* base_ = nullptr;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

// Copies to the device. The bf16 variant stores x's values, which must
// already be bf16-exact (RandomBf16, RoundBf16).
DeviceArray<bf16> UploadBf16(const std::vector<float>& x, bool misalign = false);
DeviceArray<float> Upload(const std::vector<float>& x);
DeviceArray<int32_t> Upload(const std::vector<int32_t>& x);

// Copies back (synchronously, so after every earlier launch).
std::vector<float> Download(const DeviceArray<bf16>& x);
std::vector<float> Download(const DeviceArray<float>& x);

// An element passes when |got - want| <= atol + rtol * |want|.
struct Tolerance {
  double rtol = 0;
  double atol = 0;
};

// Checks every element, prints "<what>: ok/FAILED" with the worst element and
// how much of the tolerance it used, and returns whether all passed.
bool Compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
             Tolerance tol);

// Prints and returns false when `s` (a launcher's result, or a Status from
// the device) is an error.
bool Ok(const std::string& what, const Status& s);

// Waits for `stream` and reports any asynchronous error.
bool Sync(cudaStream_t stream);

// The training kernels' tests, one per kernels/cuda header, in
// <name>_gpu_test.cc; training_kernels_gpu_test.cc runs each as a Catch2 test
// case. Each prints what it compares and returns whether everything matched.
// (The serving kernels' tests are Catch2 test cases themselves.)
bool TestEncoder(cudaStream_t stream);
bool TestLayerNorm(cudaStream_t stream);
bool TestMatmul(cudaStream_t stream);
bool TestAttention(cudaStream_t stream);
bool TestFlashAttention(cudaStream_t stream);
bool TestGelu(cudaStream_t stream);
bool TestClassifier(cudaStream_t stream);
bool TestAdamW(cudaStream_t stream);
bool TestGlobalNorm(cudaStream_t stream);

}  // namespace kiln::kernels::cuda::test

#endif  // KILN_TESTS_KERNELS_CUDA_GPU_CHECK_H_
