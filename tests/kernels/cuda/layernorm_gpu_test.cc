// kernels/cuda/layernorm.h against cpu::LayerNormForward/LayerNormBackward.
// bf16 outputs (out, dinp): rtol 1e-2, atol 1e-4. Both sides compute in float
// from the same bf16 inputs, so they differ by the final rounding to bf16
// (2^-9 relative) plus float noise (about 1e-6 absolute for O(1) values).
// float outputs (mean, rstd, dweight, dbias): rtol 1e-5, atol 1e-5 (mean)
// or 1e-4 (the parameter gradients, sums over all rows): the same values
// summed in a different order. The fused residual must equal
// bf16(a + b) exactly. The backward is given the CPU's mean and rstd, so it
// is tested apart from the forward.
#include <cstdio>
#include <string>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/layernorm.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kBf16Out{1e-2, 1e-4};
constexpr Tolerance kMean{1e-5, 1e-5};
constexpr Tolerance kParamGrad{1e-5, 1e-4};

std::size_t Size(int64_t n) { return static_cast<std::size_t>(n); }

// Rows with different means, so mean and rstd matter.
std::vector<float> Rows(int N, int C, std::mt19937& rng) {
  std::vector<float> x = RandomFloat(Size(int64_t{N} * C), -2, 2, rng);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) x[Size(int64_t{n} * C + c)] += static_cast<float>(n % 5) - 2.0f;
  }
  for (float& v : x) v = RoundBf16(v);
  return x;
}

// residual: whether to test ResidualLayerNormForward (in place over a when
// in_place) rather than LayerNormForward.
bool RunForward(cudaStream_t stream, int N, int C, bool misalign, bool residual, bool in_place) {
  std::printf(" forward%s%s N=%d C=%d%s\n", residual ? " with residual" : "",
              in_place ? " in place" : "", N, C, misalign ? " unaligned" : "");
  std::mt19937 rng(static_cast<unsigned>(N * C));
  const std::size_t NC = Size(int64_t{N} * C);
  const auto a = Rows(N, C, rng), b = RandomBf16(NC, -1, 1, rng);
  const auto weight = RandomBf16(Size(C), 0.5f, 1.5f, rng);
  const auto bias = RandomBf16(Size(C), -0.5f, 0.5f, rng);
  // The GPU normalises the stored bf16 residual; so does the reference.
  std::vector<float> x = a;
  if (residual) {
    for (std::size_t i = 0; i < NC; ++i) x[i] = RoundBf16(a[i] + b[i]);
  }
  std::vector<float> out(NC), mean(Size(N)), rstd(Size(N));
  cpu::LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(),
                        N, C);

  auto d_a = UploadBf16(a, misalign), d_b = UploadBf16(b, misalign);
  auto d_weight = UploadBf16(weight, misalign), d_bias = UploadBf16(bias, misalign);
  DeviceArray<bf16> d_out(NC, misalign), d_residual(NC, misalign);
  DeviceArray<float> d_mean(Size(N)), d_rstd(Size(N));
  bf16* residual_out = in_place ? d_a.get() : d_residual.get();
  const Status s = residual ? ResidualLayerNormForward(residual_out, d_out.get(), d_mean.get(),
                                                       d_rstd.get(), d_a.get(), d_b.get(),
                                                       d_weight.get(), d_bias.get(), N, C, stream)
                            : LayerNormForward(d_out.get(), d_mean.get(), d_rstd.get(), d_a.get(),
                                               d_weight.get(), d_bias.get(), N, C, stream);
  if (!Ok("forward", s) || !Sync(stream)) return false;
  bool ok = true;
  if (residual) {
    const auto& stored = in_place ? d_a : d_residual;
    ok = Compare("residual (exact)", Download(stored), x, Tolerance{0, 0}) && ok;
  }
  ok = Compare("out", Download(d_out), out, kBf16Out) && ok;
  ok = Compare("mean", Download(d_mean), mean, kMean) && ok;
  return Compare("rstd", Download(d_rstd), rstd, kMean) && ok;
}

bool RunBackward(cudaStream_t stream, int N, int C, bool misalign) {
  std::printf(" backward N=%d C=%d%s\n", N, C, misalign ? " unaligned" : "");
  std::mt19937 rng(static_cast<unsigned>(N + C));
  const std::size_t NC = Size(int64_t{N} * C);
  const auto inp = Rows(N, C, rng);
  const auto weight = RandomBf16(Size(C), 0.5f, 1.5f, rng);
  const auto bias = RandomBf16(Size(C), -0.5f, 0.5f, rng);
  std::vector<float> out(NC), mean(Size(N)), rstd(Size(N));
  cpu::LayerNormForward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                        bias.data(), N, C);
  const auto dout = RandomBf16(NC, -1, 1, rng);
  auto dinp = RandomBf16(NC, -0.5f, 0.5f, rng);
  auto dweight = RandomFloat(Size(C), -1, 1, rng), dbias = RandomFloat(Size(C), -1, 1, rng);

  auto d_dinp = UploadBf16(dinp, misalign), d_dout = UploadBf16(dout, misalign);
  auto d_inp = UploadBf16(inp, misalign), d_weight = UploadBf16(weight, misalign);
  auto d_dweight = Upload(dweight), d_dbias = Upload(dbias);
  auto d_mean = Upload(mean), d_rstd = Upload(rstd);
  DeviceArray<float> scratch(LayerNormBackwardScratchFloats(N, C));
  cpu::LayerNormBackward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                         weight.data(), mean.data(), rstd.data(), N, C);
  if (!Ok("backward", LayerNormBackward(d_dinp.get(), d_dweight.get(), d_dbias.get(), d_dout.get(),
                                        d_inp.get(), d_weight.get(), d_mean.get(), d_rstd.get(), N,
                                        C, scratch.get(), stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("dinp", Download(d_dinp), dinp, kBf16Out);
  ok = Compare("dweight", Download(d_dweight), dweight, kParamGrad) && ok;
  return Compare("dbias", Download(d_dbias), dbias, kParamGrad) && ok;
}

}  // namespace

bool TestLayerNorm(cudaStream_t stream) {
  // N = 133: not a multiple of the 8 rows per block or the 64 rows per chunk.
  // C = 136: 17 16-byte vectors per row, fewer than a warp's lanes; C = 77
  // and misaligned buffers: one value at a time. C = 1000: several vectors
  // per lane. C = 256, 768 and 1024 (N = 200: chunks of 64 rows and a
  // partial one) take the one-pass backward; 768 is GPT-2 124M's width.
  bool ok = true;
  for (int C : {256, 768, 1024}) ok = RunBackward(stream, 200, C, false) && ok;
  for (int C : {136, 77, 1000}) {
    ok = RunForward(stream, 133, C, false, false, false) && ok;
    ok = RunForward(stream, 133, C, false, true, false) && ok;
    ok = RunBackward(stream, 133, C, false) && ok;
  }
  ok = RunForward(stream, 133, 136, false, true, true) && ok;
  ok = RunForward(stream, 45, 136, true, true, false) && ok;
  return RunBackward(stream, 45, 136, true) && ok;
}

}  // namespace kiln::kernels::cuda::test
