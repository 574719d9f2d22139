// kernels/cuda/classifier.h against cpu::SoftmaxCrossEntropyForward followed
// by cpu::SoftmaxCrossEntropyBackward (dlosses all equal to dloss, dlogits
// starting at zero). losses (float): rtol 1e-5, atol 1e-5: float softmax
// normalisers summed in another order. dlogits (bf16): rtol 1e-2, atol 1e-9:
// the float probabilities agree to about 1e-6 relative, so the GPU value
// differs by its rounding to bf16 (2^-9 relative); the values are as small as
// 1e-9, hence the tiny atol; the padding must be exactly 0.
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/classifier.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kLoss{1e-5, 1e-5};
constexpr Tolerance kGrad{1e-2, 1e-9};

std::size_t Size(int64_t n) { return static_cast<std::size_t>(n); }

bool Run(cudaStream_t stream, int N, int V, int Vp, bool in_place, bool misalign) {
  std::printf(" N=%d V=%d Vp=%d%s%s\n", N, V, Vp, in_place ? " in place" : "",
              misalign ? " unaligned" : "");
  std::mt19937 rng(static_cast<unsigned>(N + V + Vp));
  auto logits = RandomBf16(Size(int64_t{N} * Vp), -4, 4, rng);
  // Large padding logits: any leak into the softmax would show.
  for (int n = 0; n < N; ++n) {
    for (int i = V; i < Vp; ++i) logits[Size(int64_t{n} * Vp + i)] = 30.0f;
  }
  const auto targets = RandomTokens(Size(N), V, rng);
  const float dloss = 1.0f / static_cast<float>(N);
  std::vector<float> losses(Size(N)), probs(logits.size()), dlogits(logits.size(), 0.0f);
  std::vector<float> dlosses(Size(N), dloss);
  cpu::SoftmaxCrossEntropyForward(losses.data(), probs.data(), logits.data(), targets.data(), N, V,
                                  Vp);
  cpu::SoftmaxCrossEntropyBackward(dlogits.data(), dlosses.data(), probs.data(), targets.data(), N,
                                   V, Vp);

  auto d_logits = UploadBf16(logits, misalign);
  auto d_targets = Upload(targets);
  DeviceArray<float> d_losses(Size(N)), d_losses_only(Size(N));
  DeviceArray<bf16> d_dlogits(logits.size(), misalign);
  bf16* grad = in_place ? d_logits.get() : d_dlogits.get();
  if (!Ok("FusedClassifier without gradient",
          FusedClassifier(nullptr, d_losses_only.get(), d_logits.get(), d_targets.get(), dloss, N,
                          V, Vp, stream)) ||
      !Ok("FusedClassifier", FusedClassifier(grad, d_losses.get(), d_logits.get(), d_targets.get(),
                                             dloss, N, V, Vp, stream)) ||
      !Sync(stream)) {
    return false;
  }
  bool ok = Compare("losses", Download(d_losses), losses, kLoss);
  ok = Compare("losses without gradient", Download(d_losses_only), losses, kLoss) && ok;
  return Compare("dlogits", Download(in_place ? d_logits : d_dlogits), dlogits, kGrad) && ok;
}

}  // namespace

bool TestClassifier(cudaStream_t stream) {
  // V = 1000 inside Vp = 1024 (16-byte vectors, a partial vector at V); a
  // GPT-2 sized row; then Vp = 1003, which forces one value at a time.
  bool ok = Run(stream, 123, 1000, 1024, false, false);
  ok = Run(stream, 123, 1000, 1024, true, false) && ok;
  ok = Run(stream, 5, 50257, 50304, true, false) && ok;
  return Run(stream, 37, 997, 1003, false, true) && ok;
}

}  // namespace kiln::kernels::cuda::test
