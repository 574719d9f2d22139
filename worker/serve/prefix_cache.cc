#include "worker/serve/prefix_cache.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kiln::serve {

std::string PrefixCache::Key(std::span<const int32_t> prefix) {
  std::string key(prefix.size() * sizeof(int32_t), '\0');
  if (!prefix.empty()) std::memcpy(key.data(), prefix.data(), key.size());
  return key;
}

std::vector<int> PrefixCache::Acquire(std::span<const int32_t> prompt, int max_blocks) {
  std::vector<int> out;
  const auto bs = static_cast<size_t>(block_size_);
  for (size_t k = 1; static_cast<int>(k) <= max_blocks && k * bs <= prompt.size(); ++k) {
    auto it = by_key_.find(Key(prompt.first(k * bs)));
    if (it == by_key_.end()) break;
    Entry& e = by_block_.at(it->second);
    if (e.refs++ == 0) lru_.erase(e.lru);
    out.push_back(it->second);
  }
  return out;
}

void PrefixCache::Release(std::span<const int> blocks) {
  for (int b : blocks) {
    auto it = by_block_.find(b);
    if (it == by_block_.end() || it->second.refs == 0) {
      // A block released more often than acquired could be evicted while a
      // sequence still reads it: stop rather than go on.
      std::fprintf(stderr, "PrefixCache::Release: block %d holds no reference\n", b);
      std::abort();
    }
    if (--it->second.refs == 0) it->second.lru = lru_.insert(lru_.end(), b);
  }
}

bool PrefixCache::Insert(std::span<const int32_t> prefix, int block) {
  std::string key = Key(prefix);
  if (by_key_.count(key) != 0 || by_block_.count(block) != 0) return false;
  by_key_.emplace(key, block);
  Entry& e = by_block_[block];
  e.key = std::move(key);
  e.lru = lru_.insert(lru_.end(), block);
  return true;
}

std::vector<int> PrefixCache::Evict(int n) {
  std::vector<int> out;
  while (static_cast<int>(out.size()) < n && !lru_.empty()) {
    const int b = lru_.front();
    lru_.pop_front();
    auto it = by_block_.find(b);
    by_key_.erase(it->second.key);
    by_block_.erase(it);
    out.push_back(b);
  }
  return out;
}

}  // namespace kiln::serve
