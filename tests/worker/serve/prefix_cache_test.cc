// PrefixCache: exact-prefix lookup of whole blocks, references, and eviction
// of unreferenced blocks least recently used first.
#include "worker/serve/prefix_cache.h"

#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

namespace kiln::serve {
namespace {

std::vector<int32_t> Tokens(int n, int32_t first = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = first + i;
  return t;
}

TEST_CASE("PrefixCache finds the longest run of cached blocks that starts a prompt",
          "[serve][prefix_cache]") {
  PrefixCache cache(4);
  const auto prompt = Tokens(14);
  const std::span<const int32_t> p(prompt);
  REQUIRE(cache.Insert(p.first(4), 7));
  REQUIRE(cache.Insert(p.first(8), 3));
  REQUIRE(cache.Insert(p.first(12), 9));
  CHECK(cache.blocks() == 3);
  CHECK(cache.evictable() == 3);

  CHECK(cache.Acquire(prompt, 10) == std::vector<int>{7, 3, 9});
  CHECK(cache.evictable() == 0);
  // At most max_blocks, and never past the prompt's end.
  CHECK(cache.Acquire(prompt, 2) == std::vector<int>{7, 3});
  CHECK(cache.Acquire(p.first(9), 10) == std::vector<int>{7, 3});
  // A prompt that differs inside the second block shares the first only.
  auto other = prompt;
  other[5] = 99;
  CHECK(cache.Acquire(other, 10) == std::vector<int>{7});
  // ...and one that differs in its first token nothing.
  other[0] = 99;
  CHECK(cache.Acquire(other, 10).empty());
  // A block for a prefix the cache has, or a block it holds, is refused.
  CHECK_FALSE(cache.Insert(p.first(4), 11));
  CHECK_FALSE(cache.Insert(Tokens(4, 50), 7));
}

TEST_CASE("PrefixCache evicts only unreferenced blocks, least recently used first",
          "[serve][prefix_cache]") {
  PrefixCache cache(2);
  const auto a = Tokens(2, 0), b = Tokens(2, 10), c = Tokens(2, 20);
  REQUIRE(cache.Insert(a, 1));
  REQUIRE(cache.Insert(b, 2));
  REQUIRE(cache.Insert(c, 3));
  // a is used again (it becomes the most recently used once released); b is
  // in use.
  const auto held_a = cache.Acquire(a, 1);
  const auto held_b = cache.Acquire(b, 1);
  REQUIRE(held_a == std::vector<int>{1});
  REQUIRE(held_b == std::vector<int>{2});
  cache.Release(held_a);
  CHECK(cache.evictable() == 2);
  CHECK(cache.Evict(1) == std::vector<int>{3});
  CHECK(cache.Acquire(c, 1).empty());  // Evicted blocks are forgotten.
  // Asking for more than is evictable returns what there is; b stays.
  CHECK(cache.Evict(5) == std::vector<int>{1});
  CHECK(cache.blocks() == 1);
  cache.Release(held_b);
  CHECK(cache.Evict(5) == std::vector<int>{2});
  CHECK(cache.blocks() == 0);
  // A block id may come back under another prefix once evicted.
  CHECK(cache.Insert(c, 2));
}

TEST_CASE("PrefixCache counts every reference", "[serve][prefix_cache]") {
  PrefixCache cache(3);
  const auto t = Tokens(3);
  REQUIRE(cache.Insert(t, 5));
  const auto one = cache.Acquire(t, 1), two = cache.Acquire(t, 1);
  cache.Release(one);
  CHECK(cache.Evict(1).empty());  // Still referenced once.
  cache.Release(two);
  CHECK(cache.Evict(1) == std::vector<int>{5});
}

}  // namespace
}  // namespace kiln::serve
