// Internal to kernels/cuda: cuBLAS and cuBLASLt errors as a Status naming the
// failed call and its location.
#ifndef KILN_KERNELS_CUDA_CUBLAS_CHECK_H_
#define KILN_KERNELS_CUDA_CUBLAS_CHECK_H_

#include <string>

#include <cublas_v2.h>

#include "base/status.h"

namespace kiln::kernels::cuda {

// Allocation and execution failures are Unavailable (the device may be out of
// memory or gone); the rest are Internal (a bad call, i.e. a bug).
inline Status CublasStatus(cublasStatus_t err, const char* call, const char* file, int line) {
  if (err == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  std::string msg = std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
                    cublasGetStatusName(err) + " (" + cublasGetStatusString(err) + ")";
  if (err == CUBLAS_STATUS_ALLOC_FAILED || err == CUBLAS_STATUS_EXECUTION_FAILED) {
    return Status::Unavailable(std::move(msg));
  }
  return Status::Internal(std::move(msg));
}

}  // namespace kiln::kernels::cuda

#define KILN_CUBLAS_RETURN_IF_ERROR(call) \
  KILN_RETURN_IF_ERROR(::kiln::kernels::cuda::CublasStatus((call), #call, __FILE__, __LINE__))

#endif  // KILN_KERNELS_CUDA_CUBLAS_CHECK_H_
