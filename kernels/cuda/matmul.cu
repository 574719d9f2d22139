// kernels/cuda/matmul.h. cuBLASLt is column-major: a row-major [R, K] matrix
// is a column-major K x R one, so every product below is written for the
// transposes, e.g. out^T [OC, N] = weight^T^T [OC, C] * inp^T [C, N].
#include <cstdint>
#include <string>

#include "kernels/cuda/chunk_sums.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda {
namespace {

// Stage one of the bias gradient: block (x, y) sums rows [y * kRowsPerChunk,
// ...) of columns [x * blockDim.x, ...), one column per thread.
__global__ void BiasGradPartialsKernel(float* partials, const bf16* dout, int N, int OC) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  const int chunk = blockIdx.y;
  const int begin = chunk * kRowsPerChunk;
  const int end = min(N, begin + kRowsPerChunk);
  float sum = 0.0f;
  for (int n = begin; n < end; ++n) sum += __bfloat162float(dout[static_cast<int64_t>(n) * OC + o]);
  partials[static_cast<int64_t>(chunk) * OC + o] = sum;
}

// The largest power of two (up to 256) dividing the address: what cuBLASLt
// may assume about a buffer's alignment when it picks a kernel.
uint32_t AlignmentOf(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Owns the descriptors of one cuBLASLt call.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (preference != nullptr) cublasLtMatmulPreferenceDestroy(preference);
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

// What a GEMM's epilogue does besides storing D: add a bias (length m,
// bf16), and either apply GELU (storing the pre-GELU values in aux) or
// multiply by GELU's derivative at aux. aux has D's shape and type, leading
// dimension m.
struct Epilogue {
  const bf16* bias = nullptr;
  enum class Gelu { kNone, kForward, kBackward } gelu = Gelu::kNone;
  bf16* aux = nullptr;
};

cublasLtEpilogue_t EpilogueKind(const Epilogue& e) {
  switch (e.gelu) {
    case Epilogue::Gelu::kForward:
      return e.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    case Epilogue::Gelu::kBackward:
      return CUBLASLT_EPILOGUE_DGELU;
    case Epilogue::Gelu::kNone:
      break;
  }
  return e.bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

// One column-major GEMM, D (m x n, ld ldd) = epilogue(op(A) * op(B) + beta *
// D), with bf16 A and B and float accumulation. D is bf16 or float (d_type).
// op(A) is m x k: A is stored k x m when transa, else m x k; likewise op(B)
// is k x n.
Status Gemm(const Blas& blas, bool transa, bool transb, int m, int n, int k, const bf16* A, int lda,
            const bf16* B, int ldb, void* D, cudaDataType_t d_type, int ldd, float beta,
            const Epilogue& epi, cudaStream_t stream) {
  LtDescriptors desc;
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  KILN_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  KILN_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cublasLtEpilogue_t epilogue = EpilogueKind(epi);
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                             &epilogue, sizeof(epilogue)));
  if (epi.bias != nullptr) {
    const cudaDataType_t bias_type = CUDA_R_16BF;
    KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &epi.bias, sizeof(epi.bias)));
  }
  if (epi.gelu != Epilogue::Gelu::kNone) {
    const int64_t aux_ld = m;
    KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &epi.aux, sizeof(epi.aux)));
    KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  KILN_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda));
  KILN_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&desc.b, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&desc.d, d_type, m, n, ldd));

  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&desc.preference));
  const uint64_t workspace_bytes = blas.workspace_bytes();
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
      sizeof(workspace_bytes)));
  // cuBLASLt assumes 256-byte aligned buffers unless told otherwise; slices of
  // larger tensors (one layer's weights, one micro-batch) may be less aligned.
  const uint32_t align_a = AlignmentOf(A), align_b = AlignmentOf(B), align_d = AlignmentOf(D);
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  KILN_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulAlgoGetHeuristic(blas.cublaslt(), desc.op, desc.a, desc.b, desc.d, desc.d,
                                     desc.preference, 1, &heuristic, &found));
  if (found == 0) {
    return Status::Internal(
        "cuBLASLt has no algorithm for m=" + std::to_string(m) + " n=" + std::to_string(n) +
        " k=" + std::to_string(k) + " transa=" + std::to_string(transa) +
        " transb=" + std::to_string(transb) + " D=" + (d_type == CUDA_R_32F ? "f32" : "bf16") +
        " epilogue=" + std::to_string(static_cast<int>(epilogue)) + " alignments " +
        std::to_string(align_a) + "/" + std::to_string(align_b) + "/" + std::to_string(align_d));
  }
  const float alpha = 1.0f;
  KILN_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(blas.cublaslt(), desc.op, &alpha, A, desc.a, B, desc.b,
                                             &beta, D, desc.d, D, desc.d, &heuristic.algo,
                                             blas.workspace(), blas.workspace_bytes(), stream));
  return Status::Ok();
}

Status CheckShape(const char* op, int N, int C, int OC) {
  if (N <= 0 || C <= 0 || OC <= 0) return ShapeError(op, "N, C and OC must be positive");
  return Status::Ok();
}

}  // namespace

Status MatmulForward(const Blas& blas, bf16* out, const bf16* inp, const bf16* weight,
                     const bf16* bias, int N, int C, int OC, cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("MatmulForward", N, C, OC));
  // out^T [OC, N] = weight [OC, C] (stored as C x OC, so transposed) * inp^T [C, N].
  return Gemm(blas, /*transa=*/true, /*transb=*/false, OC, N, C, weight, C, inp, C, out,
              CUDA_R_16BF, OC, /*beta=*/0.0f, Epilogue{.bias = bias}, stream);
}

Status MatmulGeluForward(const Blas& blas, bf16* out, bf16* pre, const bf16* inp,
                         const bf16* weight, const bf16* bias, int N, int C, int OC,
                         cudaStream_t stream) {
  KILN_RETURN_IF_ERROR(CheckShape("MatmulGeluForward", N, C, OC));
  if (OC % 8 != 0) return ShapeError("MatmulGeluForward", "OC must be a multiple of 8");
  return Gemm(blas, /*transa=*/true, /*transb=*/false, OC, N, C, weight, C, inp, C, out,
              CUDA_R_16BF, OC, /*beta=*/0.0f,
              Epilogue{.bias = bias, .gelu = Epilogue::Gelu::kForward, .aux = pre}, stream);
}

std::size_t MatmulBackwardScratchFloats(int N, int OC) {
  return static_cast<std::size_t>(RowChunks(N)) * static_cast<std::size_t>(OC);
}

Status MatmulBackward(const Blas& blas, bf16* dinp, float* dweight, float* dbias, const bf16* dout,
                      const bf16* inp, const bf16* weight, int N, int C, int OC, float* scratch,
                      cudaStream_t stream, const MatmulBackwardOptions& options) {
  KILN_RETURN_IF_ERROR(CheckShape("MatmulBackward", N, C, OC));
  const int chunks = RowChunks(N);
  if (dbias != nullptr && (scratch == nullptr || chunks > 65535)) {
    return ShapeError("MatmulBackward", "a bias gradient needs scratch and N below 65536 * 64");
  }
  Epilogue dinp_epilogue;
  if (options.gelu_input != nullptr) {
    if (!options.overwrite_dinp || C % 8 != 0) {
      return ShapeError("MatmulBackward",
                        "the GELU derivative needs overwrite_dinp and C a multiple of 8");
    }
    dinp_epilogue.gelu = Epilogue::Gelu::kBackward;
    dinp_epilogue.aux = const_cast<bf16*>(options.gelu_input);  // Only read by DGELU.
  }
  // dinp^T [C, N] (+)= weight^T [C, OC] (stored as C x OC) * dout^T [OC, N].
  KILN_RETURN_IF_ERROR(Gemm(blas, false, false, C, N, OC, weight, C, dout, OC, dinp, CUDA_R_16BF, C,
                            /*beta=*/options.overwrite_dinp ? 0.0f : 1.0f, dinp_epilogue, stream));
  // dweight^T [C, OC] += inp^T [C, N] * dout [N, OC] (dout^T stored as OC x N).
  KILN_RETURN_IF_ERROR(Gemm(blas, false, true, C, OC, N, inp, C, dout, OC, dweight, CUDA_R_32F, C,
                            /*beta=*/1.0f, Epilogue{}, stream));
  if (dbias == nullptr) return Status::Ok();
  constexpr int kColumns = 256;
  const dim3 grid(static_cast<unsigned>(CeilDiv(OC, kColumns)), static_cast<unsigned>(chunks));
  BiasGradPartialsKernel<<<grid, kColumns, 0, stream>>>(scratch, dout, N, OC);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return AddChunkSums(dbias, scratch, chunks, OC, OC, stream);
}

}  // namespace kiln::kernels::cuda
