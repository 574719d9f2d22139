// kernels/cuda/flash_attention.h against cpu::AttentionForward/Backward, at
// head size 64: T that is a multiple of the 64- and 128-row tiles and T that
// is not (67, 200, 300: partial last tiles; 1: a single row; 1024: the GPT-2
// length, 16 pipeline steps), one and several heads and batches. out and dqkv: rtol 2e-2, atol
// 1e-2, as the unfused attention test (the GPU multiplies bf16-rounded probabilities and score
// gradients); lse (log2 of the softmax denominator of the scaled scores, from the CPU's preatt):
// 1e-4 absolute, float rounding only. The GPU's dqkv starts as NaN to check that the backward
// writes every element (it overwrites, where the CPU reference adds into zeros).
#include <cmath>
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/flash_attention.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kOut{2e-2, 1e-2};
constexpr Tolerance kLse{0, 1e-4};

std::size_t Size(int64_t n) { return static_cast<std::size_t>(n); }

bool Run(cudaStream_t stream, int B, int T, int NH) {
  const int C = 64 * NH;
  std::printf(" B=%d T=%d C=%d NH=%d\n", B, T, C, NH);
  std::mt19937 rng(static_cast<unsigned>(B * 1000 + T * 10 + NH));
  const std::size_t btc = Size(int64_t{B} * T * C), bnhtt = Size(int64_t{B} * NH * T * T);
  const auto qkv = RandomBf16(3 * btc, -2, 2, rng);
  std::vector<float> out(btc), preatt(bnhtt), att(bnhtt);
  cpu::AttentionForward(out.data(), preatt.data(), att.data(), qkv.data(), B, T, C, NH);
  std::vector<float> lse(Size(int64_t{B} * NH * T));
  for (std::size_t row = 0; row < lse.size(); ++row) {
    const int t = static_cast<int>(row % Size(T));
    const float* s = preatt.data() + row * Size(T);
    double max = -INFINITY, sum = 0;
    for (int j = 0; j <= t; ++j) max = std::max(max, static_cast<double>(s[j]));
    for (int j = 0; j <= t; ++j) sum += std::exp(static_cast<double>(s[j]) - max);
    lse[row] = static_cast<float>((max + std::log(sum)) / std::log(2.0));
  }

  auto d_qkv = UploadBf16(qkv);
  DeviceArray<bf16> d_out(btc);
  DeviceArray<float> d_lse(lse.size());
  if (!Ok("FlashAttentionForward",
          FlashAttentionForward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, stream)) ||
      !Sync(stream)) {
    return false;
  }
  const std::vector<float> gpu_out = Download(d_out);
  bool ok = Compare("out", gpu_out, out, kOut);
  ok = Compare("lse", Download(d_lse), lse, kLse) && ok;

  const auto dout = RandomBf16(btc, -1, 1, rng);
  std::vector<float> dqkv(3 * btc, 0.0f);
  // The GPU's backward takes its own forward's out (as the model does); the
  // reference's att is exact.
  auto d_dout = UploadBf16(dout), d_out_again = UploadBf16(gpu_out);
  auto d_dqkv = UploadBf16(std::vector<float>(3 * btc, std::nanf("")));
  std::vector<float> dpreatt(bnhtt), datt(bnhtt);
  cpu::AttentionBackward(dqkv.data(), dpreatt.data(), datt.data(), dout.data(), qkv.data(),
                         att.data(), B, T, C, NH);
  DeviceArray<char> scratch(FlashAttentionBackwardScratchBytes(B, T, NH));
  if (!Ok("FlashAttentionBackward",
          FlashAttentionBackward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out_again.get(),
                                 d_lse.get(), B, T, C, NH, scratch.get(),
                                 FlashAttentionBackwardScratchBytes(B, T, NH), stream)) ||
      !Sync(stream)) {
    return false;
  }
  return Compare("dqkv", Download(d_dqkv), dqkv, kOut) && ok;
}

}  // namespace

bool TestFlashAttention(cudaStream_t stream) {
  auto Expect = [](const char* what, bool pass) {
    std::printf("  %s: %s\n", what, pass ? "ok" : "FAILED");
    return pass;
  };
  bool ok = Expect("head size 64 is supported, 32 is not",
                   FlashAttentionSupported(64) && !FlashAttentionSupported(32));
  DeviceArray<bf16> x(3 * 64);
  DeviceArray<float> l(1);
  ok = Expect("head size 48 is refused",
              FlashAttentionForward(x.get(), l.get(), x.get(), 1, 1, 96, 2, stream).code() ==
                  StatusCode::kInvalidArgument) &&
       ok;
  ok = Run(stream, 2, 67, 2) && ok;
  ok = Run(stream, 1, 200, 3) && ok;
  ok = Run(stream, 3, 64, 1) && ok;
  ok = Run(stream, 1, 1, 2) && ok;
  ok = Run(stream, 2, 300, 1) && ok;
  ok = Run(stream, 1, 1024, 1) && ok;
  return Run(stream, 1, 256, 2) && ok;
}

}  // namespace kiln::kernels::cuda::test
