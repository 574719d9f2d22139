// CUDA error handling and device-memory ownership for kiln's kernels. Only
// included from .cu files. Not thread-safe per object.
#ifndef KILN_KERNELS_CUDA_CHECK_H_
#define KILN_KERNELS_CUDA_CHECK_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "base/status.h"

namespace kiln::gpu {

// Converts a CUDA error to a Status naming the failed call and its location.
// Errors that mean the device is gone or broken are Unavailable (retryable
// elsewhere); the rest are Internal.
inline Status CudaStatus(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return Status::Ok();
  std::string msg = std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
                    cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  switch (err) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorECCUncorrectable:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorLaunchFailure:
    case cudaErrorMemoryAllocation:
    case cudaErrorNoKernelImageForDevice:
      return Status::Unavailable(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

// Owns `count` elements of T in device memory.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Free(); }
  Status Allocate(std::size_t count) {
    Free();
    void* p = nullptr;
    Status s = CudaStatus(cudaMalloc(&p, count * sizeof(T)), "cudaMalloc", __FILE__, __LINE__);
    if (s.ok()) {
      ptr_ = static_cast<T*>(p);
      size_ = count;
    }
    return s;
  }
  // At least `count` elements: reallocates (contents undefined) when smaller.
  Status Reserve(std::size_t count) {
    return count <= size_ && ptr_ != nullptr ? Status::Ok() : Allocate(count);
  }
  T* get() const { return ptr_; }
  std::size_t size() const { return size_; }

 private:
  void Free() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }

  T* ptr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace kiln::gpu

#define KILN_CUDA_RETURN_IF_ERROR(call) \
  KILN_RETURN_IF_ERROR(::kiln::gpu::CudaStatus((call), #call, __FILE__, __LINE__))

#endif  // KILN_KERNELS_CUDA_CHECK_H_
