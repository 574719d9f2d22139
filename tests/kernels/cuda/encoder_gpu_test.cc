// kernels/cuda/encoder.h against cpu::EncoderForward/EmbedRows/EncoderBackward.
// Forward tolerance: rtol 4e-3 (2^-8), atol 1e-6: the float sum of two bf16
// values is exact or nearly, so the only error is the final rounding to bf16,
// at most 2^-9 relative. Backward tolerance (float gradients): rtol 1e-5,
// atol 1e-5: the same bf16 inputs summed in float in a different grouping.
#include <cstdio>
#include <string>

#include <catch2/catch.hpp>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/encoder.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/support/gpu.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kForward{4e-3, 1e-6};
constexpr Tolerance kGrad{1e-5, 1e-5};

bool Run(cudaStream_t stream, int B, int T, int C, int V, int Vp, bool misalign) {
  const std::string shape = "B=" + std::to_string(B) + " T=" + std::to_string(T) +
                            " C=" + std::to_string(C) + (misalign ? " unaligned" : "");
  std::printf(" %s\n", shape.c_str());
  std::mt19937 rng(static_cast<unsigned>(C));
  const std::size_t N = static_cast<std::size_t>(B) * static_cast<std::size_t>(T);
  const std::size_t NC = N * static_cast<std::size_t>(C);
  const auto wte =
      RandomBf16(static_cast<std::size_t>(Vp) * static_cast<std::size_t>(C), -1, 1, rng);
  const auto wpe =
      RandomBf16(static_cast<std::size_t>(T) * static_cast<std::size_t>(C), -1, 1, rng);
  auto tokens = RandomTokens(N, V, rng);
  // Every third position holds token 7, so one token has a long run to sum.
  for (std::size_t i = 0; i < N; i += 3) tokens[i] = 7;

  std::vector<float> want(NC);
  cpu::EncoderForward(want.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  auto d_wte = UploadBf16(wte, misalign), d_wpe = UploadBf16(wpe, misalign);
  auto d_tokens = Upload(tokens);
  DeviceArray<bf16> d_out(NC, misalign);
  if (!Ok("EncoderForward",
          EncoderForward(d_out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("out", Download(d_out), want, kForward);

  const auto dout = RandomBf16(NC, -1, 1, rng);
  auto dwte = RandomFloat(wte.size(), -1, 1, rng), dwpe = RandomFloat(wpe.size(), -1, 1, rng);
  auto d_dout = UploadBf16(dout, misalign);
  auto d_dwte = Upload(dwte), d_dwpe = Upload(dwpe);
  cpu::EncoderBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  auto scratch_bytes = EncoderBackwardScratchBytes(B, T);
  if (!Ok("EncoderBackwardScratchBytes", scratch_bytes.status())) return false;
  DeviceArray<char> scratch(*scratch_bytes);
  if (!Ok("EncoderBackward",
          EncoderBackward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_tokens.get(), B, T, C,
                          scratch.get(), *scratch_bytes, stream)) ||
      !Sync(stream)) {
    return false;
  }
  ok = Compare("dwte", Download(d_dwte), dwte, kGrad) && ok;
  return Compare("dwpe", Download(d_dwpe), dwpe, kGrad) && ok;
}

}  // namespace

bool TestEncoder(cudaStream_t stream) {
  // C = 136: 16-byte vectors, 17 per row; C = 77: one value at a time.
  bool ok = Run(stream, 3, 41, 136, 50, 64, false);
  ok = Run(stream, 3, 41, 77, 50, 64, false) && ok;
  return Run(stream, 2, 33, 136, 50, 64, true) && ok;
}

// The serving rows: tokens at arbitrary (repeated, unordered) positions,
// with the forward's tolerance.
TEST_CASE("embed_rows", "[gpu]") {
  KILN_REQUIRE_GPU();
  testing::CudaStream stream;
  for (const int C : {768, 77}) {
    for (const bool misalign : {false, true}) {
      std::printf(" C=%d%s\n", C, misalign ? " unaligned" : "");
      constexpr int kVocab = 50, kContext = 64;
      std::mt19937 rng(static_cast<unsigned>(C));
      const auto wte =
          RandomBf16(static_cast<std::size_t>(kVocab) * static_cast<std::size_t>(C), -1, 1, rng);
      const auto wpe =
          RandomBf16(static_cast<std::size_t>(kContext) * static_cast<std::size_t>(C), -1, 1, rng);
      const std::vector<int32_t> tokens = {3, 49, 0, 3, 17};
      const std::vector<int32_t> pos = {63, 0, 5, 5, 1};
      const int N = static_cast<int>(tokens.size());
      std::vector<float> want(tokens.size() * static_cast<std::size_t>(C));
      cpu::EmbedRows(want.data(), tokens.data(), pos.data(), wte.data(), wpe.data(), N, C);
      auto d_wte = UploadBf16(wte, misalign), d_wpe = UploadBf16(wpe, misalign);
      auto d_tokens = Upload(tokens), d_pos = Upload(pos);
      DeviceArray<bf16> out(want.size(), misalign);
      REQUIRE(Ok("EmbedRows", EmbedRows(out.get(), d_tokens.get(), d_pos.get(), d_wte.get(),
                                        d_wpe.get(), N, C, stream.get())));
      REQUIRE(Sync(stream.get()));
      CHECK(Compare("out", Download(out), want, kForward));
    }
  }
}

}  // namespace kiln::kernels::cuda::test
