// The paged KV cache's kernels on the CPU: appending a call's keys and values
// to the cache, and causal attention of rows over their sequences' cached
// positions through block tables (as vLLM's PagedAttention). The CPU
// decoder's path (worker/serve/decoder.h) and the reference of
// kernels/cuda/paged_attention.h, which uses the same layout.
//
// Layout of one layer's cache: [num_blocks][K|V][block_size][C], so block b's
// keys are the block_size rows at (2b) * block_size * C and its values the
// rows after them; head h is columns [h*hs, (h+1)*hs), hs = C / NH. Sequence
// s holds the table tables[s * table_width ...]; its position t lives in block
// table[t / block_size] at row t % block_size, i.e. slot
// table[t / block_size] * block_size + t % block_size. Rows: N new tokens,
// row r of sequence row_seq[r] at position row_pos[r]; qkv is [N, 3C] (q, k, v
// each C wide). Thread-compatible: the functions keep no state; the attention
// is OpenMP-parallel over (row, head).
#ifndef KILN_KERNELS_CPU_PAGED_ATTENTION_H_
#define KILN_KERNELS_CPU_PAGED_ATTENTION_H_

#include <cstdint>

namespace kiln::kernels::cpu {

// Copies row r's key and value (columns C..2C and 2C..3C of qkv) into the
// cache rows of slot[r] (block * block_size + offset).
void AppendKv(float* layer_cache, const float* qkv, const int32_t* slot, int N, int block_size,
              int C);

// out[r, head h] = sum over t <= row_pos[r] of softmax_t(q . k_t / sqrt(hs))
// v_t, with q row r's query and k_t, v_t read from the cache through its
// sequence's table (which must cover row_pos[r]). out is [N, C]. Rows attend
// to what the cache holds, their own position included: append first.
void PagedAttentionForward(float* out, const float* qkv, const float* layer_cache,
                           const int32_t* row_seq, const int32_t* row_pos, const int32_t* tables,
                           int table_width, int N, int block_size, int C, int NH);

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_PAGED_ATTENTION_H_
