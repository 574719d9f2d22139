// kernels/cuda/convert.h against cpu::FloatToBf16 (matmul_bf16.h): both
// round to nearest even, so exact, ties and subnormals included. n = 1007
// covers a partial last block.
#include <cstdint>
#include <iterator>
#include <random>

#include <catch2/catch.hpp>

#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cuda/convert.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/support/gpu.h"

namespace kiln::kernels::cuda::test {

TEST_CASE("float_to_bf16", "[gpu]") {
  KILN_REQUIRE_GPU();
  testing::CudaStream stream;
  std::mt19937 rng(7);
  std::vector<float> in = RandomFloat(1007, -3, 3, rng);
  // Ties (halfway between two bf16 values, both parities), a subnormal,
  // signed zero and values near bf16's largest.
  const float specials[] = {1.00390625f, 1.01171875f, -2.0078125f, 1e-40f,
                            -0.0f,       3.0e38f,     -3.0e38f};
  std::copy(std::begin(specials), std::end(specials), in.begin());
  std::vector<float> want(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) want[i] = cpu::Bf16ToFloat(cpu::FloatToBf16(in[i]));
  auto d_in = Upload(in);
  DeviceArray<bf16> out(in.size());
  REQUIRE(Ok("FloatToBf16",
             FloatToBf16(out.get(), d_in.get(), static_cast<int64_t>(in.size()), stream.get())));
  REQUIRE(Sync(stream.get()));
  CHECK(Compare("out", Download(out), want, {0, 0}));
}

}  // namespace kiln::kernels::cuda::test
