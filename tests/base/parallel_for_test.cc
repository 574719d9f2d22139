// ParallelFor: every index exactly once, on at most `width` threads at once,
// and none for n = 0.
#include "base/parallel_for.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

namespace kiln {
namespace {

TEST_CASE("ParallelFor runs every index once on at most width threads", "[base][parallel]") {
  for (std::size_t width : {1u, 3u, 16u}) {
    INFO("width " << width);
    std::vector<std::atomic<int>> calls(40);
    std::atomic<int> running{0}, most{0};
    ParallelFor(calls.size(), width, [&](std::size_t i) {
      const int now = ++running;
      for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
      }
      // The first calls wait (up to 10 s) until `width` run at once: they
      // can only if that many threads run them.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (i < width && most.load() < static_cast<int>(width) &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ++calls[i];
      --running;
    });
    for (const auto& c : calls) CHECK(c.load() == 1);
    CHECK(static_cast<std::size_t>(most.load()) == width);
  }
  bool called = false;
  ParallelFor(0, 8, [&](std::size_t) { called = true; });
  CHECK_FALSE(called);
}

}  // namespace
}  // namespace kiln
