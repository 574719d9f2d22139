// kernels/cuda/matmul.h against cpu::MatmulForward/MatmulBackward.
// bf16 outputs (out, dinp): rtol 1e-2, atol 2e-3. Both accumulate exact
// bf16 products in float, so they differ by the rounding to bf16 (2^-9
// relative), and by one more such rounding (about 1e-3 absolute for these
// O(0.3) sums) if the epilogue rounds the product before adding the bias or
// the old dinp. float outputs: dweight rtol 1e-5, atol 1e-4 (sums over N
// rows in another order); dbias rtol 1e-5, atol 1e-5. Overwriting backwards
// start the GPU's dinp as NaN, so an element left unwritten fails. The fused
// GELU forward and backward (cuBLASLt epilogues, in float before the one
// rounding) against cpu::GeluForward/GeluBackward around the CPU matmul, at
// the bf16 tolerance.
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

bool Run(cudaStream_t stream, const Blas& blas, int N, int C, int OC, bool with_bias,
         bool overwrite = false) {
  std::printf(" N=%d C=%d OC=%d%s%s\n", N, C, OC, with_bias ? " with bias" : " without bias",
              overwrite ? ", overwriting dinp" : "");
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
  auto dinp =
      overwrite ? std::vector<float>(inp.size(), 0.0f) : RandomBf16(inp.size(), -0.5f, 0.5f, rng);
  auto dweight = RandomFloat(weight.size(), -0.5f, 0.5f, rng);
  auto dbias = RandomFloat(bias.size(), -0.5f, 0.5f, rng);
  auto d_dout = UploadBf16(dout);
  auto d_dinp = UploadBf16(overwrite ? std::vector<float>(inp.size(), std::nanf("")) : dinp);
  auto d_dweight = Upload(dweight), d_dbias = Upload(dbias);
  DeviceArray<float> scratch(MatmulBackwardScratchFloats(N, OC));
  cpu::MatmulBackward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, dout.data(),
                      inp.data(), weight.data(), N, C, OC);
  if (!Ok("MatmulBackward",
          MatmulBackward(blas, d_dinp.get(), d_dweight.get(), with_bias ? d_dbias.get() : nullptr,
                         d_dout.get(), d_inp.get(), d_weight.get(), N, C, OC, scratch.get(), stream,
                         {.overwrite_dinp = overwrite})) ||
      !Sync(stream)) {
    return false;
  }
  ok = Compare("dinp", Download(d_dinp), dinp, kBf16Out) && ok;
  ok = Compare("dweight", Download(d_dweight), dweight, kWeightGrad) && ok;
  // Without a bias, dbias must come back untouched.
  return Compare("dbias", Download(d_dbias), dbias, kBiasGrad) && ok;
}

// A GELU MLP's two layers: the first (C -> H) with MatmulGeluForward, the
// second (H -> OC) backward through MatmulBackward's GELU derivative.
bool RunGelu(cudaStream_t stream, const Blas& blas, int N, int C, int H, int OC) {
  std::printf(" GELU: N=%d C=%d H=%d OC=%d\n", N, C, H, OC);
  std::mt19937 rng(static_cast<unsigned>(N * 5 + C * 11 + H));
  const float w = 2.0f / std::sqrt(static_cast<float>(C));  // Pre-GELU values O(1).
  const auto inp = RandomBf16(Size(int64_t{N} * C), -1, 1, rng);
  const auto weight = RandomBf16(Size(int64_t{H} * C), -w, w, rng);
  const auto bias = RandomBf16(Size(H), -0.5f, 0.5f, rng);
  std::vector<float> pre(Size(int64_t{N} * H)), out(pre.size());
  cpu::MatmulForward(pre.data(), inp.data(), weight.data(), bias.data(), N, C, H);
  cpu::GeluForward(out.data(), pre.data(), static_cast<int64_t>(pre.size()));
  auto d_inp = UploadBf16(inp), d_weight = UploadBf16(weight), d_bias = UploadBf16(bias);
  DeviceArray<bf16> d_pre(pre.size()), d_out(out.size());
  if (!Ok("MatmulGeluForward", MatmulGeluForward(blas, d_out.get(), d_pre.get(), d_inp.get(),
                                                 d_weight.get(), d_bias.get(), N, C, H, stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("pre", Download(d_pre), pre, kBf16Out);
  ok = Compare("gelu", Download(d_out), out, kBf16Out) && ok;

  // Backward of out2 = gelu(x) @ weight2^T, x the GPU's own pre-GELU values.
  const std::vector<float> x = Download(d_pre), x_gelu = Download(d_out);
  const float w2 = 1.0f / std::sqrt(static_cast<float>(H));
  const auto weight2 = RandomBf16(Size(int64_t{OC} * H), -w2, w2, rng);
  const auto dout = RandomBf16(Size(int64_t{N} * OC), -1, 1, rng);
  std::vector<float> dgelu(x.size(), 0.0f), dx(x.size(), 0.0f), dweight(weight2.size(), 0.0f);
  cpu::MatmulBackward(dgelu.data(), dweight.data(), static_cast<float*>(nullptr), dout.data(),
                      x_gelu.data(), weight2.data(), N, H, OC);
  cpu::GeluBackward(dx.data(), x.data(), dgelu.data(), static_cast<int64_t>(x.size()));
  auto d_weight2 = UploadBf16(weight2), d_dout = UploadBf16(dout);
  auto d_dx = UploadBf16(std::vector<float>(x.size(), std::nanf("")));
  auto d_dweight = Upload(std::vector<float>(weight2.size(), 0.0f));
  if (!Ok("MatmulBackward with the GELU derivative",
          MatmulBackward(blas, d_dx.get(), d_dweight.get(), nullptr, d_dout.get(), d_out.get(),
                         d_weight2.get(), N, H, OC, nullptr, stream,
                         {.overwrite_dinp = true, .gelu_input = d_pre.get()})) ||
      !Sync(stream)) {
    return false;
  }
  ok = Compare("dx (through gelu')", Download(d_dx), dx, kBf16Out) && ok;
  ok = Compare("dweight2", Download(d_dweight), dweight, kWeightGrad) && ok;
  const bool refused =
      MatmulBackward(blas, d_dx.get(), d_dweight.get(), nullptr, d_dout.get(), d_out.get(),
                     d_weight2.get(), N, H, OC, nullptr, stream, {.gelu_input = d_pre.get()})
          .code() == StatusCode::kInvalidArgument;
  std::printf("  the GELU derivative without overwrite_dinp is refused: %s\n",
              refused ? "ok" : "FAILED");
  return refused && ok;
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
  ok = Run(stream, *blas, 133, 136, 100, true, /*overwrite=*/true) && ok;
  ok = Run(stream, *blas, 256, 128, 384, true, /*overwrite=*/true) && ok;
  ok = RunGelu(stream, *blas, 133, 64, 256, 64) && ok;
  ok = RunGelu(stream, *blas, 256, 96, 384, 96) && ok;
  return Run(stream, *blas, 192, 64, 320, false) && ok;
}

}  // namespace kiln::kernels::cuda::test
