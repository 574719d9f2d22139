// Blas: owns the cuBLAS and cuBLASLt handles of the current device and the
// workspace cuBLASLt's GEMMs use. Created once per device and passed to the
// launchers that multiply matrices (matmul.h, attention.h). Not thread-safe:
// use it from one host thread, and do not let GEMMs on different streams run
// at the same time (they share the workspace).
#ifndef KILN_KERNELS_CUDA_BLAS_H_
#define KILN_KERNELS_CUDA_BLAS_H_

#include <cublasLt.h>

#include <cstddef>

#include <cublas_v2.h>

#include "base/statusor.h"

namespace kiln::kernels::cuda {

class Blas {
 public:
  // Workspace recommended for cuBLASLt on Hopper.
  static constexpr std::size_t kWorkspaceBytes = 32 << 20;

  // Handles and a workspace on the current device; Unavailable or Internal
  // when the device or the libraries cannot provide them.
  static StatusOr<Blas> Create();

  Blas(Blas&& other) noexcept;
  Blas& operator=(Blas&& other) noexcept;
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  ~Blas();

  cublasHandle_t cublas() const { return cublas_; }
  cublasLtHandle_t cublaslt() const { return cublaslt_; }
  void* workspace() const { return workspace_; }
  std::size_t workspace_bytes() const { return kWorkspaceBytes; }

 private:
  Blas() = default;
  void Reset();

  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublaslt_ = nullptr;
  void* workspace_ = nullptr;
};

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_BLAS_H_
