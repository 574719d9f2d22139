// kernels/cuda/adamw.h against cpu::AdamW on gradients pre-multiplied by the
// same grad_scale (the same float product on both sides). params: rtol 1e-6,
// atol 1e-7; m, v: rtol 1e-5 with atols far below their magnitudes. The
// formulas are the CPU's, term for term; only fused multiply-adds on the GPU
// change the last bit. The bf16 copy must equal bf16(params) exactly.
#include <cstdio>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/adamw.h"
#include "tests/kernels/cuda/gpu_check.h"

namespace kiln::kernels::cuda::test {
namespace {

bool Run(cudaStream_t stream, int64_t n, int64_t step, float weight_decay, bool fresh) {
  std::printf(" n=%lld step=%lld weight_decay=%g%s\n", static_cast<long long>(n),
              static_cast<long long>(step), static_cast<double>(weight_decay),
              fresh ? " zero moments" : "");
  const auto size = static_cast<std::size_t>(n);
  std::mt19937 rng(static_cast<unsigned>(n + step));
  auto params = RandomFloat(size, -1, 1, rng);
  const auto grads = RandomFloat(size, -0.01f, 0.01f, rng);
  auto m = fresh ? std::vector<float>(size, 0.0f) : RandomFloat(size, -1e-3f, 1e-3f, rng);
  auto v = fresh ? std::vector<float>(size, 0.0f) : RandomFloat(size, 0.0f, 1e-5f, rng);
  const float grad_scale = 0.5f;
  const cpu::AdamWParams p{.learning_rate = 1e-3f, .weight_decay = weight_decay, .step = step};

  auto d_params = Upload(params), d_grads = Upload(grads), d_m = Upload(m), d_v = Upload(v);
  DeviceArray<bf16> d_copy(size);
  std::vector<float> scaled = grads;
  for (float& g : scaled) g *= grad_scale;
  cpu::AdamW(params.data(), scaled.data(), m.data(), v.data(), n, p);
  if (!Ok("AdamW", AdamW(d_params.get(), d_copy.get(), d_grads.get(), d_m.get(), d_v.get(), n, p,
                         grad_scale, stream)) ||
      !Sync(stream)) {
    return false;
  }
  const std::vector<float> got = Download(d_params);
  std::vector<float> rounded(got.size());
  for (std::size_t i = 0; i < got.size(); ++i) rounded[i] = RoundBf16(got[i]);
  bool ok = Compare("params", got, params, Tolerance{1e-6, 1e-7});
  ok = Compare("m", Download(d_m), m, Tolerance{1e-5, 1e-10}) && ok;
  ok = Compare("v", Download(d_v), v, Tolerance{1e-5, 1e-13}) && ok;
  return Compare("bf16 copy (exact)", Download(d_copy), rounded, Tolerance{0, 0}) && ok;
}

}  // namespace

bool TestAdamW(cudaStream_t stream) {
  bool ok = Run(stream, 100003, 1, 0.0f, true);
  return Run(stream, 100003, 7, 0.1f, false) && ok;
}

}  // namespace kiln::kernels::cuda::test
