// kernels/cuda/gather.h against cpu::GatherRows: a copy, so exact. Rows
// repeat and come in any order; C = 77 is no multiple of a warp.
#include <cstdio>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/gather.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/support/gpu.h"

namespace kiln::kernels::cuda::test {

TEST_CASE("gather_rows", "[gpu]") {
  KILN_REQUIRE_GPU();
  testing::CudaStream stream;
  for (const int C : {768, 77}) {
    std::printf(" C=%d\n", C);
    std::mt19937 rng(static_cast<unsigned>(C));
    constexpr int kRows = 40;
    const auto in =
        RandomBf16(static_cast<std::size_t>(kRows) * static_cast<std::size_t>(C), -1, 1, rng);
    const std::vector<int32_t> rows = {39, 0, 5, 5, 17, 38};
    const int n = static_cast<int>(rows.size());
    std::vector<float> want(rows.size() * static_cast<std::size_t>(C));
    cpu::GatherRows(want.data(), in.data(), rows.data(), n, C);
    auto d_in = UploadBf16(in);
    auto d_rows = Upload(rows);
    DeviceArray<bf16> out(want.size());
    REQUIRE(Ok("GatherRows", GatherRows(out.get(), d_in.get(), d_rows.get(), n, C, stream.get())));
    REQUIRE(Sync(stream.get()));
    CHECK(Compare("out", Download(out), want, {0, 0}));
  }
}

}  // namespace kiln::kernels::cuda::test
