// kernels/cuda/attention.h against cpu::AttentionForward/AttentionBackward.
// att: rtol 1e-2, atol 1e-5: the scores agree to float noise, so att differs
// by its rounding to bf16. out and dqkv: rtol 2e-2, atol 1e-2. The GPU
// multiplies by the bf16-rounded att (and, backward, the bf16 score
// gradient), each carrying up to 2^-9 relative error into sums of up to T
// terms of size up to 2; for these shapes the expected error of the worst of
// the ~50k elements is about 4e-3. An indexing or masking bug shows as errors
// of 0.1 and more.
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/attention.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kAtt{1e-2, 1e-5};
constexpr Tolerance kOut{2e-2, 1e-2};

std::size_t Size(int64_t n) { return static_cast<std::size_t>(n); }

bool Run(cudaStream_t stream, const Blas& blas, int B, int T, int C, int NH) {
  std::printf(" B=%d T=%d C=%d NH=%d\n", B, T, C, NH);
  std::mt19937 rng(static_cast<unsigned>(B * 1000 + T * 10 + NH));
  const std::size_t btc = Size(int64_t{B} * T * C), bnhtt = Size(int64_t{B} * NH * T * T);
  const auto qkv = RandomBf16(3 * btc, -2, 2, rng);
  std::vector<float> out(btc), preatt(bnhtt), att(bnhtt);
  cpu::AttentionForward(out.data(), preatt.data(), att.data(), qkv.data(), B, T, C, NH);

  const std::size_t scratch_bytes = AttentionScratchBytes(B, T, C, NH);
  DeviceArray<char> scratch(scratch_bytes);
  auto d_qkv = UploadBf16(qkv);
  DeviceArray<bf16> d_out(btc), d_att(bnhtt);
  if (!Ok("AttentionForward", AttentionForward(blas, d_out.get(), d_att.get(), d_qkv.get(), B, T, C,
                                               NH, scratch.get(), scratch_bytes, stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("att", Download(d_att), att, kAtt);
  ok = Compare("out", Download(d_out), out, kOut) && ok;

  const auto dout = RandomBf16(btc, -1, 1, rng);
  auto dqkv = RandomBf16(3 * btc, -0.05f, 0.05f, rng);
  // Uploaded before the reference adds into dqkv: both start from the same
  // values (the kernel accumulates).
  auto d_dout = UploadBf16(dout), d_dqkv = UploadBf16(dqkv);
  std::vector<float> dpreatt(bnhtt), datt(bnhtt);
  cpu::AttentionBackward(dqkv.data(), dpreatt.data(), datt.data(), dout.data(), qkv.data(),
                         att.data(), B, T, C, NH);
  if (!Ok("AttentionBackward",
          AttentionBackward(blas, d_dqkv.get(), d_dout.get(), d_qkv.get(), d_att.get(), B, T, C, NH,
                            scratch.get(), scratch_bytes, stream)) ||
      !Sync(stream)) {
    return false;
  }
  return Compare("dqkv", Download(d_dqkv), dqkv, kOut) && ok;
}

}  // namespace

bool TestAttention(cudaStream_t stream) {
  auto blas = Blas::Create();
  if (!Ok("Blas::Create", blas.status())) return false;
  // T = 67: rows that end inside a warp's stride and a head size (34) that is
  // not a multiple of 8; then T = 64 with 16-wide heads, and one head of 64.
  bool ok = Run(stream, *blas, 2, 67, 136, 4);
  ok = Run(stream, *blas, 3, 64, 64, 4) && ok;
  return Run(stream, *blas, 1, 96, 64, 1) && ok;
}

}  // namespace kiln::kernels::cuda::test
