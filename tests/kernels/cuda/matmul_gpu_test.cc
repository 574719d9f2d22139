// kernels/cuda/matmul.h against cpu::MatmulForward/MatmulBackward.
// bf16 outputs (out, dinp): rtol 1e-2, atol 2e-3. Both accumulate exact
// bf16 products in float, so they differ by the rounding to bf16 (2^-9
// relative), and by one more such rounding (about 1e-3 absolute for these
// O(0.3) sums) if the epilogue rounds the product before adding the bias or
// the old dinp. float outputs: dweight rtol 1e-5, atol 1e-4 (sums over N
// rows in another order); dbias rtol 1e-5, atol 1e-5.
#include <cmath>
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/matmul.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kBf16Out{1e-2, 2e-3};
constexpr Tolerance kWeightGrad{1e-5, 1e-4};
constexpr Tolerance kBiasGrad{1e-5, 1e-5};

std::size_t Size(int64_t n) { return static_cast<std::size_t>(n); }

bool Run(cudaStream_t stream, const Blas& blas, int N, int C, int OC, bool with_bias) {
  std::printf(" N=%d C=%d OC=%d%s\n", N, C, OC, with_bias ? " with bias" : " without bias");
  std::mt19937 rng(static_cast<unsigned>(N * 7 + C * 3 + OC));
  const float w = 1.0f / std::sqrt(static_cast<float>(C));  // Keeps the outputs O(0.3).
  const auto inp = RandomBf16(Size(int64_t{N} * C), -1, 1, rng);
  const auto weight = RandomBf16(Size(int64_t{OC} * C), -w, w, rng);
  const auto bias = RandomBf16(Size(OC), -0.5f, 0.5f, rng);
  std::vector<float> out(Size(int64_t{N} * OC));
  cpu::MatmulForward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                     OC);

  auto d_inp = UploadBf16(inp), d_weight = UploadBf16(weight), d_bias = UploadBf16(bias);
  DeviceArray<bf16> d_out(out.size());
  if (!Ok("MatmulForward", MatmulForward(blas, d_out.get(), d_inp.get(), d_weight.get(),
                                         with_bias ? d_bias.get() : nullptr, N, C, OC, stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("out", Download(d_out), out, kBf16Out);

  const auto dout = RandomBf16(out.size(), -1, 1, rng);
  auto dinp = RandomBf16(inp.size(), -0.5f, 0.5f, rng);
  auto dweight = RandomFloat(weight.size(), -0.5f, 0.5f, rng);
  auto dbias = RandomFloat(bias.size(), -0.5f, 0.5f, rng);
  auto d_dout = UploadBf16(dout), d_dinp = UploadBf16(dinp);
  auto d_dweight = Upload(dweight), d_dbias = Upload(dbias);
  DeviceArray<float> scratch(MatmulBackwardScratchFloats(N, OC));
  cpu::MatmulBackward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, dout.data(),
                      inp.data(), weight.data(), N, C, OC);
  if (!Ok("MatmulBackward",
          MatmulBackward(blas, d_dinp.get(), d_dweight.get(), with_bias ? d_dbias.get() : nullptr,
                         d_dout.get(), d_inp.get(), d_weight.get(), N, C, OC, scratch.get(),
                         stream)) ||
      !Sync(stream)) {
    return false;
  }
  ok = Compare("dinp", Download(d_dinp), dinp, kBf16Out) && ok;
  ok = Compare("dweight", Download(d_dweight), dweight, kWeightGrad) && ok;
  // Without a bias, dbias must come back untouched.
  return Compare("dbias", Download(d_dbias), dbias, kBiasGrad) && ok;
}

}  // namespace

bool TestMatmul(cudaStream_t stream) {
  auto blas = Blas::Create();
  if (!Ok("Blas::Create", blas.status())) return false;
  // Odd N and an OC that is not a multiple of 8 (leading dimensions that
  // break 16-byte alignment), then GPT-like shapes: qkv with bias, and a
  // padded-vocabulary head without.
  bool ok = Run(stream, *blas, 133, 136, 100, true);
  ok = Run(stream, *blas, 133, 77, 45, false) && ok;
  ok = Run(stream, *blas, 256, 128, 384, true) && ok;
  return Run(stream, *blas, 192, 64, 320, false) && ok;
}

}  // namespace kiln::kernels::cuda::test
