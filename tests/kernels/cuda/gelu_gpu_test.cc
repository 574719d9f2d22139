// kernels/cuda/gelu.h against cpu::GeluForward/GeluBackward. Tolerance
// rtol 1e-2, atol 1e-5: both sides evaluate the same float formula on the
// same bf16 inputs (tanhf against std::tanh differ by an ulp or two), so the
// GPU result differs by its rounding to bf16, 2^-9 relative.
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/gelu.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kTol{1e-2, 1e-5};

bool Run(cudaStream_t stream, int64_t n, bool misalign, bool in_place) {
  std::printf(" n=%lld%s%s\n", static_cast<long long>(n), misalign ? " unaligned" : "",
              in_place ? " in place" : "");
  const auto size = static_cast<std::size_t>(n);
  std::mt19937 rng(static_cast<unsigned>(n));
  const auto inp = RandomBf16(size, -5, 5, rng);
  std::vector<float> out(size);
  cpu::GeluForward(out.data(), inp.data(), n);

  // In place, the forward overwrites a copy of the input: the backward needs it.
  auto d_inp = UploadBf16(inp, misalign), d_out = UploadBf16(inp, misalign);
  const bf16* forward_inp = in_place ? d_out.get() : d_inp.get();
  if (!Ok("GeluForward", GeluForward(d_out.get(), forward_inp, n, stream)) || !Sync(stream)) {
    return false;
  }
  bool ok = Compare("out", Download(d_out), out, kTol);

  const auto dout = RandomBf16(size, -1, 1, rng);
  auto dinp = RandomBf16(size, -1, 1, rng);
  auto d_dout = UploadBf16(dout, misalign), d_dinp = UploadBf16(dinp, misalign);
  cpu::GeluBackward(dinp.data(), inp.data(), dout.data(), n);
  if (!Ok("GeluBackward", GeluBackward(d_dinp.get(), d_inp.get(), d_dout.get(), n, stream)) ||
      !Sync(stream)) {
    return false;
  }
  return Compare("dinp", Download(d_dinp), dinp, kTol) && ok;
}

}  // namespace

bool TestGelu(cudaStream_t stream) {
  // 8005 = 1000 vectors of 8 and a tail of 5; then the unvectorised path.
  bool ok = Run(stream, 8005, false, false);
  ok = Run(stream, 8005, false, true) && ok;
  return Run(stream, 1001, true, false) && ok;
}

}  // namespace kiln::kernels::cuda::test
