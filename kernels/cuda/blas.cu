// kernels/cuda/blas.h.
#include <utility>

#include "kernels/cuda/blas.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {

StatusOr<Blas> Blas::Create() {
  Blas blas;
  KILN_CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas.cublas_));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&blas.cublaslt_));
  KILN_CUDA_RETURN_IF_ERROR(cudaMalloc(&blas.workspace_, kWorkspaceBytes));
  return StatusOr<Blas>(std::move(blas));
}

Blas::Blas(Blas&& other) noexcept
    : cublas_(std::exchange(other.cublas_, nullptr)),
      cublaslt_(std::exchange(other.cublaslt_, nullptr)),
      workspace_(std::exchange(other.workspace_, nullptr)) {}

Blas& Blas::operator=(Blas&& other) noexcept {
  if (this != &other) {
    Reset();
    cublas_ = std::exchange(other.cublas_, nullptr);
    cublaslt_ = std::exchange(other.cublaslt_, nullptr);
    workspace_ = std::exchange(other.workspace_, nullptr);
  }
  return *this;
}

Blas::~Blas() { Reset(); }

void Blas::Reset() {
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (cublaslt_ != nullptr) cublasLtDestroy(cublaslt_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  workspace_ = nullptr;
  cublaslt_ = nullptr;
  cublas_ = nullptr;
}

}  // namespace kiln::kernels::cuda
