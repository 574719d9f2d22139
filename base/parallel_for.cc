#include "base/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace kiln {

void ParallelFor(std::size_t n, std::size_t width, const std::function<void(std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  auto drain = [&] {
    for (std::size_t i = next++; i < n; i = next++) fn(i);
  };
  const std::size_t threads = std::min(std::max<std::size_t>(width, 1), n);
  std::vector<std::thread> helpers;
  for (std::size_t t = 1; t < threads; ++t) helpers.emplace_back(drain);
  drain();
  for (std::thread& t : helpers) t.join();
}

}  // namespace kiln
