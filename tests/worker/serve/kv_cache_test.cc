// worker/serve/kv_cache.h: blocks come from one pool, distinct while held,
// back in the pool once freed; a failed allocation takes nothing; each
// block's keys and values are rows of their own; freeing a block that is not
// allocated aborts rather than hand it to two sequences.
#include "worker/serve/kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <set>

#include <catch2/catch.hpp>
#include <sys/wait.h>

namespace kiln::serve {
namespace {

TEST_CASE("the KV cache hands out distinct blocks and takes them back", "[serve]") {
  PagedKvCache cache(/*layers=*/2, /*channels=*/8, /*block_size=*/4, /*num_blocks=*/6);
  CHECK(cache.free_blocks() == 6);
  CHECK(cache.utilization() == 0.0);
  CHECK(cache.BlocksFor(0) == 0);
  CHECK(cache.BlocksFor(1) == 1);
  CHECK(cache.BlocksFor(4) == 1);
  CHECK(cache.BlocksFor(5) == 2);

  auto a = cache.Allocate(4);
  REQUIRE(a.ok());
  auto b = cache.Allocate(2);
  REQUIRE(b.ok());
  std::set<int> ids(a->begin(), a->end());
  ids.insert(b->begin(), b->end());
  CHECK(ids == std::set<int>{0, 1, 2, 3, 4, 5});
  CHECK(cache.free_blocks() == 0);
  CHECK(cache.utilization() == 1.0);

  cache.Free(*a);
  CHECK(cache.free_blocks() == 4);
  CHECK(cache.utilization() == Approx(2.0 / 6));
  auto again = cache.Allocate(4);
  REQUIRE(again.ok());
  std::vector<int> want = *a, got = *again;
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  CHECK(got == want);
}

TEST_CASE("a KV cache allocation that does not fit takes nothing", "[serve]") {
  PagedKvCache cache(1, 4, 2, 3);
  auto held = cache.Allocate(2);
  REQUIRE(held.ok());
  auto too_many = cache.Allocate(2);
  CHECK(too_many.status().code() == StatusCode::kResourceExhausted);
  CHECK(cache.free_blocks() == 1);
  CHECK(cache.Allocate(-1).status().code() == StatusCode::kInvalidArgument);
  auto none = cache.Allocate(0);
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("each KV cache block's keys and values are rows of their own", "[serve]") {
  const int layers = 2, channels = 3, block_size = 2, blocks = 3;
  PagedKvCache cache(layers, channels, block_size, blocks);
  CHECK(cache.bytes() ==
        static_cast<int64_t>(sizeof(float)) * layers * blocks * 2 * block_size * channels);
  // Write a distinct value into every row of every block; nothing overlaps.
  float v = 1;
  for (int l = 0; l < layers; ++l) {
    for (int b = 0; b < blocks; ++b) {
      std::fill_n(cache.Keys(l, b), block_size * channels, v++);
      std::fill_n(cache.Values(l, b), block_size * channels, v++);
    }
  }
  v = 1;
  for (int l = 0; l < layers; ++l) {
    for (int b = 0; b < blocks; ++b) {
      CHECK(std::all_of(cache.Keys(l, b), cache.Keys(l, b) + block_size * channels,
                        [&](float x) { return x == v; }));
      ++v;
      CHECK(std::all_of(cache.Values(l, b), cache.Values(l, b) + block_size * channels,
                        [&](float x) { return x == v; }));
      ++v;
    }
  }
  // Layer(l) is the kernels' layout: [blocks][K|V][block_size][C].
  for (int l = 0; l < layers; ++l) {
    for (int b = 0; b < blocks; ++b) {
      CHECK(cache.Keys(l, b) == cache.Layer(l) + (b * 2 + 0) * block_size * channels);
      CHECK(cache.Values(l, b) == cache.Layer(l) + (b * 2 + 1) * block_size * channels);
    }
  }
  PagedKvCache no_host(layers, channels, block_size, blocks, /*host_storage=*/false);
  CHECK(no_host.bytes() == 0);
  CHECK(no_host.Allocate(3).ok());
}

// Runs `body` in a child process and returns how it ended.
template <class F>
int ChildStatus(F body) {
  const pid_t pid = fork();
  if (pid == 0) {
    // The child is to die by the signal itself: Catch's handler would report
    // from inside it, which is not signal-safe (ThreadSanitizer said so).
    std::signal(SIGABRT, SIG_DFL);
    body();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST_CASE("freeing a KV cache block that is not allocated aborts", "[serve]") {
  PagedKvCache cache(1, 4, 2, 3);
  auto held = cache.Allocate(1);
  REQUIRE(held.ok());
  const std::vector<int> blocks = *held;
  auto aborted = [](int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; };
  CHECK(aborted(ChildStatus([&] {
    cache.Free(blocks);
    cache.Free(blocks);  // Twice.
  })));
  CHECK(aborted(ChildStatus([&] { cache.Free({7}); })));   // Not a block id.
  CHECK(aborted(ChildStatus([&] { cache.Free({-1}); })));  // Not a block id.
  const int other = blocks[0] == 0 ? 1 : 0;
  CHECK(aborted(ChildStatus([&] { cache.Free({other}); })));  // Never allocated.
  // The parent's cache is untouched by the children.
  CHECK(cache.free_blocks() == 2);
  cache.Free(blocks);
  CHECK(cache.free_blocks() == 3);
}

}  // namespace
}  // namespace kiln::serve
