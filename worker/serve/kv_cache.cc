#include "worker/serve/kv_cache.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace kiln::serve {

PagedKvCache::PagedKvCache(int layers, int channels, int block_size, int num_blocks,
                           bool host_storage)
    : layers_(layers),
      channels_(channels),
      block_size_(block_size),
      num_blocks_(num_blocks),
      in_use_(static_cast<size_t>(num_blocks), false) {
  if (host_storage) {
    data_.assign(static_cast<size_t>(layers) * static_cast<size_t>(num_blocks) * 2 *
                     static_cast<size_t>(block_size) * static_cast<size_t>(channels),
                 0.0f);
  }
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

double PagedKvCache::utilization() const {
  return num_blocks_ == 0 ? 0.0 : 1.0 - static_cast<double>(free_.size()) / num_blocks_;
}

int PagedKvCache::BlocksFor(int64_t tokens) const {
  return static_cast<int>((tokens + block_size_ - 1) / block_size_);
}

StatusOr<std::vector<int>> PagedKvCache::Allocate(int n) {
  if (n < 0) return Status::InvalidArgument("KV cache: " + std::to_string(n) + " blocks wanted");
  if (n > free_blocks()) {
    return Status::ResourceExhausted("KV cache: " + std::to_string(n) + " blocks wanted, " +
                                     std::to_string(free_blocks()) + " free");
  }
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(free_.back());
    free_.pop_back();
    in_use_[static_cast<size_t>(out.back())] = true;
  }
  return out;
}

void PagedKvCache::Free(const std::vector<int>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const int b = *it;
    if (b < 0 || b >= num_blocks_ || !in_use_[static_cast<size_t>(b)]) {
      std::fprintf(stderr, "PagedKvCache::Free: block %d is not allocated (of %d blocks)\n", b,
                   num_blocks_);
      std::abort();
    }
    in_use_[static_cast<size_t>(b)] = false;
    free_.push_back(b);
  }
}

}  // namespace kiln::serve
