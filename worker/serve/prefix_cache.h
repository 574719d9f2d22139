// PrefixCache: KV-cache blocks that hold a known prompt prefix, kept after
// their sequence ends, so that a later request starting with the same tokens
// skips their prefill (vLLM's automatic prefix caching; llama.cpp's server
// keeps each slot's last prompt for the same reason). Only blocks filled
// entirely by prompt tokens are kept. A block is found by the exact tokens
// from position 0 to its end, since a position's key and value depend on
// every token before it: no hash stands in for the tokens, so a lookup never
// returns another prefix's block.
//
// Blocks that running sequences use are reference counted; unreferenced ones
// stay until the pool runs short and are evicted least recently used first.
// The cache holds block ids only: PagedKvCache owns the blocks, and the
// engine frees what Evict returns. Not thread-safe (the engine's loop owns
// it).
#ifndef KILN_WORKER_SERVE_PREFIX_CACHE_H_
#define KILN_WORKER_SERVE_PREFIX_CACHE_H_

#include <cstdint>
#include <list>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::serve {

class PrefixCache {
 public:
  explicit PrefixCache(int block_size) : block_size_(block_size) {}

  // The cached blocks that hold prompt[0, k * block_size) for the largest k
  // <= max_blocks, in order; each gains a reference.
  std::vector<int> Acquire(std::span<const int32_t> prompt, int max_blocks);
  // Drops one reference from each block; one left with none is evictable.
  void Release(std::span<const int> blocks);
  // Offers `block`, unreferenced, as the one that holds the last
  // block_size positions of `prefix` (whose size is a multiple of
  // block_size). False when the cache has a block for that prefix already:
  // the caller keeps `block`.
  bool Insert(std::span<const int32_t> prefix, int block);
  // Up to n unreferenced blocks, least recently used first, dropped from the
  // cache: the caller returns them to the pool.
  std::vector<int> Evict(int n);

  int blocks() const { return static_cast<int>(by_block_.size()); }
  // Blocks no running sequence uses (Evict can take them).
  int evictable() const { return static_cast<int>(lru_.size()); }

 private:
  struct Entry {
    std::string key;
    int refs = 0;
    std::list<int>::iterator lru;  // Valid while refs == 0.
  };
  static std::string Key(std::span<const int32_t> prefix);

  int block_size_;
  std::unordered_map<std::string, int> by_key_;
  std::unordered_map<int, Entry> by_block_;
  std::list<int> lru_;  // Unreferenced blocks, least recently used first.
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_PREFIX_CACHE_H_
