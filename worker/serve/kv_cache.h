// PagedKvCache: the attention keys and values of every sequence being served,
// in fixed-size blocks from one pool (as vLLM's PagedAttention): a sequence
// holds a block table, position p lives in block table[p / block_size] at row
// p % block_size, so sequences of any length share memory without
// fragmentation and a finished one returns its blocks at once.
// Per layer and block: keys [block_size, C] and values [block_size, C],
// head h at columns [h*C/NH, (h+1)*C/NH): the layout of
// kernels/cpu/paged_attention.h (and of the GPU decoder's device cache).
// Not thread-safe (the engine's loop owns it).
#ifndef KILN_WORKER_SERVE_KV_CACHE_H_
#define KILN_WORKER_SERVE_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "base/statusor.h"

namespace kiln::serve {

class PagedKvCache {
 public:
  // With `host_storage` false the cache only allocates blocks: a GPU decoder
  // keeps the keys and values in device memory by the same block ids, and
  // Keys/Values must not be called.
  PagedKvCache(int layers, int channels, int block_size, int num_blocks, bool host_storage = true);

  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  // Blocks in use / all blocks, in [0, 1].
  double utilization() const;
  // Blocks needed for `tokens` positions.
  int BlocksFor(int64_t tokens) const;
  // Host bytes of keys and values (0 without host storage).
  int64_t bytes() const { return static_cast<int64_t>(data_.size() * sizeof(float)); }

  // `n` free blocks, or ResourceExhausted leaving all free (InvalidArgument
  // for n < 0).
  StatusOr<std::vector<int>> Allocate(int n);
  // Returns blocks to the pool. A block that is not allocated (freed twice,
  // or never a block id) is a bug that would hand one block to two
  // sequences: the process aborts with a message rather than go on.
  void Free(const std::vector<int>& blocks);

  // One layer's cache: [num_blocks][K|V][block_size][C].
  float* Layer(int layer) { return data_.data() + Offset(layer, 0, 0); }
  // Rows of keys and values of `block` in `layer`: [block_size, C] each.
  float* Keys(int layer, int block) { return data_.data() + Offset(layer, block, 0); }
  float* Values(int layer, int block) { return data_.data() + Offset(layer, block, 1); }

 private:
  int64_t Offset(int layer, int block, int kv) const {
    return ((static_cast<int64_t>(layer) * num_blocks_ + block) * 2 + kv) * block_size_ * channels_;
  }

  int layers_, channels_, block_size_, num_blocks_;
  std::vector<float> data_;
  std::vector<int> free_;     // A stack of free block ids.
  std::vector<bool> in_use_;  // By block id.
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_KV_CACHE_H_
