// The paged KV cache on the GPU: appending a call's keys and values, and
// causal attention of each row over its sequence's cached positions through
// its block table (the serving decoder's attention, worker/serve/
// cuda_decoder.h). The cache layout, tables and rows are those of
// kernels/cpu/paged_attention.h, the reference, with bf16 storage:
// one layer's cache is [num_blocks][K|V][block_size][C]. Conventions in
// kernels/cuda/precision.h. Multi-head attention only (as many key/value
// heads as query heads). Thread-compatible: the functions keep no state.
#ifndef KILN_KERNELS_CUDA_PAGED_ATTENTION_H_
#define KILN_KERNELS_CUDA_PAGED_ATTENTION_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "base/status.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// Copies row r's key and value (columns C..2C and 2C..3C of qkv [N, 3C]) into
// the cache rows of slot[r] (block * block_size + offset); the device does
// not check the slots.
Status AppendKv(bf16* layer_cache, const bf16* qkv, const int32_t* slot, int N, int block_size,
                int C, cudaStream_t stream);

// OK when PagedAttentionForward handles heads of `head_size` and rows at
// positions below `max_len`; else InvalidArgument saying which limit is hit
// (head size 128; a row's scores live in 40 KiB of shared memory, so
// max_len 10240).
Status PagedAttentionSupports(int head_size, int max_len);

// out [N, C] = cpu::PagedAttentionForward's attention: row r (of sequence
// row_seq[r], at position row_pos[r] < max_len) over positions 0..row_pos[r]
// of its sequence, read through tables[row_seq[r] * table_width ...]. Scores
// in float, the output rounded once to bf16. The device does not check
// positions, tables or blocks.
//
// Head sizes 8, 16, 32, 64 and 128 on a 16-byte aligned cache and qkv take
// the split path: each (row, head) is split over its positions into enough
// blocks to fill the GPU (about two per SM; few rows get many splits, many
// rows one), and a second kernel combines the splits' partial results from
// `workspace` (PagedAttentionWorkspaceFloats floats). Without a large enough
// workspace it runs one split per (row, head). Other head sizes take one
// block of 128 threads per (row, head).
Status PagedAttentionForward(bf16* out, const bf16* qkv, const bf16* layer_cache,
                             const int32_t* row_seq, const int32_t* row_pos, const int32_t* tables,
                             int table_width, int N, int block_size, int C, int NH, int max_len,
                             cudaStream_t stream, float* workspace = nullptr,
                             int64_t workspace_floats = 0);

// The workspace (in floats) PagedAttentionForward splits with for any N up
// to `max_rows` on the current device; 0 when it never splits.
int64_t PagedAttentionWorkspaceFloats(int max_rows, int C, int NH, int max_len);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_PAGED_ATTENTION_H_
