// NoCudaDeviceReason: why a GPU test must skip, or "" when device 0 can run
// this build's sm_90 code; CudaDeviceCount: how many GPUs a test can use. For
// test executables linked with cudart (tests/support/gpu.h uses them).
#ifndef KILN_TESTS_SUPPORT_CUDA_DEVICE_H_
#define KILN_TESTS_SUPPORT_CUDA_DEVICE_H_

#include <cuda_runtime.h>

#include <string>

namespace kiln::testing {

inline std::string NoCudaDeviceReason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorName(err) + " (" +
           cudaGetErrorString(err) + ")";
  }
  if (count == 0) return "cudaGetDeviceCount found 0 devices";
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
    return "cannot read the compute capability of device 0";
  }
  if (major < 9) {
    return "device 0 is sm_" + std::to_string(major) + "x; this build targets sm_90 and newer";
  }
  return "";
}

// The number of visible CUDA devices; 0 when they cannot be counted.
inline int CudaDeviceCount() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_CUDA_DEVICE_H_
