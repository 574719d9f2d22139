// kernels/cuda/paged_attention.h against kernels/cpu/paged_attention.h on
// the batches of tests/kernels/paged_batch.h (scattered blocks, several
// sequences of different lengths, context length 1, prefill chunks beside
// decode rows, head sizes 12 to 128), on aligned and unaligned caches.
// AppendKv copies bf16 values: exact. Attention: rtol 4e-3, atol 1e-5: both
// compute in float on the same bf16 inputs (sums in other orders, __expf
// against VectorExp: errors near 1e-6), and the GPU rounds its output once to
// bf16 (at most 2^-9 relative); a wrong block, row or head shows as errors of
// 0.1 and more.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/paged_attention.h"
#include "kernels/cuda/paged_attention.h"
#include "tests/kernels/cuda/gpu_check.h"
#include "tests/kernels/paged_batch.h"
#include "tests/support/gpu.h"

namespace kiln::kernels::cuda::test {
namespace {

constexpr Tolerance kExact{0, 0};
constexpr Tolerance kOut{4e-3, 1e-5};

// `split`: with a workspace, so head sizes 8..128 split over positions.
void Check(const kernels::test::PagedShape& shape, bool misalign, bool split, cudaStream_t stream) {
  const int C = shape.C, NH = shape.NH, bs = shape.block_size;
  INFO(shape.Name() << (misalign ? " unaligned" : "") << (split ? " split" : ""));
  std::printf(" %s%s%s\n", shape.Name().c_str(), misalign ? " unaligned" : "",
              split ? " split" : "");
  std::mt19937 rng(static_cast<unsigned>(C * 31 + static_cast<int>(shape.lengths.size())));
  const kernels::test::PagedBatch b = kernels::test::MakePagedBatch(
      shape, rng, [&](std::size_t n) { return RandomBf16(n, -1.5f, 1.5f, rng); });
  const int max_len = *std::max_element(shape.lengths.begin(), shape.lengths.end());

  std::vector<float> want_cache = b.cache;
  cpu::AppendKv(want_cache.data(), b.qkv.data(), b.slot.data(), b.N, bs, C);
  std::vector<float> want(static_cast<std::size_t>(b.N) * static_cast<std::size_t>(C));
  cpu::PagedAttentionForward(want.data(), b.qkv.data(), want_cache.data(), b.row_seq.data(),
                             b.row_pos.data(), b.tables.data(), b.width, b.N, bs, C, NH);

  auto cache = UploadBf16(b.cache, misalign);
  auto qkv = UploadBf16(b.qkv);
  auto row_seq = Upload(b.row_seq), row_pos = Upload(b.row_pos), slot = Upload(b.slot);
  auto tables = Upload(b.tables);
  DeviceArray<bf16> out(want.size());
  const int64_t work_floats = split ? PagedAttentionWorkspaceFloats(b.N, C, NH, max_len) : 0;
  DeviceArray<float> work(static_cast<std::size_t>(std::max<int64_t>(work_floats, 1)));
  REQUIRE(Ok("AppendKv", AppendKv(cache.get(), qkv.get(), slot.get(), b.N, bs, C, stream)));
  REQUIRE(Ok("PagedAttentionForward",
             PagedAttentionForward(out.get(), qkv.get(), cache.get(), row_seq.get(), row_pos.get(),
                                   tables.get(), b.width, b.N, bs, C, NH, max_len, stream,
                                   split ? work.get() : nullptr, work_floats)));
  REQUIRE(Sync(stream));
  CHECK(Compare("cache", Download(cache), want_cache, kExact));
  CHECK(Compare("out", Download(out), want, kOut));
}

}  // namespace

TEST_CASE("paged_attention", "[gpu]") {
  KILN_REQUIRE_GPU();
  testing::CudaStream stream;
  for (const kernels::test::PagedShape& shape : kernels::test::PagedShapes()) {
    Check(shape, false, false, stream.get());
    Check(shape, false, true, stream.get());
  }
  // An unaligned cache takes the general kernel's scalar key loads.
  Check(kernels::test::PagedShapes()[3], true, true, stream.get());
}

// The launchers' checks need no device.
TEST_CASE("paged_attention_limits", "[gpu]") {
  CHECK(PagedAttentionSupports(128, 10240).ok());
  CHECK(PagedAttentionSupports(129, 1024).code() == StatusCode::kInvalidArgument);
  CHECK(PagedAttentionSupports(64, 10241).code() == StatusCode::kInvalidArgument);
  const Status bad_heads = PagedAttentionForward(nullptr, nullptr, nullptr, nullptr, nullptr,
                                                 nullptr, 1, 1, 16, 100, 3, 64, nullptr);
  CHECK(bad_heads.code() == StatusCode::kInvalidArgument);
  CHECK(AppendKv(nullptr, nullptr, nullptr, 0, 16, 64, nullptr).code() ==
        StatusCode::kInvalidArgument);
}

}  // namespace kiln::kernels::cuda::test
