// kernels/cuda/adamw.h: one thread per parameter.
#include <cmath>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// c1, c2: the bias corrections 1 - beta^step, computed on the host exactly as
// the CPU reference does.
__global__ void AdamWKernel(float* params, bf16* params_bf16, const float* grads, float* m,
                            float* v, int64_t n, float lr, float beta1, float beta2, float c1,
                            float c2, float eps, float weight_decay, float grad_scale) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float g = grads[i] * grad_scale;
  const float mi = beta1 * m[i] + (1.0f - beta1) * g;
  const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  const float mhat = mi / c1;
  const float vhat = vi / c2;
  float p = params[i];
  p -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
  params[i] = p;
  if (params_bf16 != nullptr) params_bf16[i] = __float2bfloat16_rn(p);
}

}  // namespace

Status AdamW(float* params, bf16* params_bf16, const float* grads, float* m, float* v, int64_t n,
             const cpu::AdamWParams& p, float grad_scale, cudaStream_t stream) {
  if (n <= 0) return ShapeError("AdamW", "n must be positive");
  if (p.step < 1) return ShapeError("AdamW", "step is 1-based");
  const float c1 = 1.0f - std::pow(p.beta1, static_cast<float>(p.step));
  const float c2 = 1.0f - std::pow(p.beta2, static_cast<float>(p.step));
  const auto blocks = static_cast<unsigned>(CeilDiv(n, kThreads));
  AdamWKernel<<<blocks, kThreads, 0, stream>>>(params, params_bf16, grads, m, v, n, p.learning_rate,
                                               p.beta1, p.beta2, c1, c2, p.eps, p.weight_decay,
                                               grad_scale);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

}  // namespace kiln::kernels::cuda
