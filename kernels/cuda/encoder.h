// The GPT encoder on the GPU: token plus position embeddings (of a batch of
// sequences, or of rows at arbitrary positions when serving), and its
// backward. Conventions in kernels/cuda/precision.h; reference
// kernels/cpu/ops.h EncoderForward/EmbedRows/EncoderBackward. Thread-compatible: the
// functions keep no state.
#ifndef KILN_KERNELS_CUDA_ENCODER_H_
#define KILN_KERNELS_CUDA_ENCODER_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "base/status.h"
#include "base/statusor.h"
#include "kernels/cuda/precision.h"

namespace kiln::kernels::cuda {

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]. Tokens must be rows of wte; the
// device does not check them (the model checks its inputs on the host).
Status EncoderForward(bf16* out, const int32_t* inp, const bf16* wte, const bf16* wpe, int B, int T,
                      int C, cudaStream_t stream);

// out[r,:] = wte[token[r],:] + wpe[pos[r],:] for N rows (serving: each row
// one sequence's next token). Tokens and positions are not checked on the
// device.
Status EmbedRows(bf16* out, const int32_t* token, const int32_t* pos, const bf16* wte,
                 const bf16* wpe, int N, int C, cudaStream_t stream);

// Bytes of scratch EncoderBackward needs for B x T tokens. Asks the device
// (through CUB), so it fails without one.
StatusOr<std::size_t> EncoderBackwardScratchBytes(int B, int T);

// dwte[inp[b,t],:] += dout[b,t,:] and dwpe[t,:] += dout[b,t,:], in float.
// Deterministic: the positions are sorted by token (a stable radix sort) and
// each token's rows are summed in position order, so a token's sum is one
// block's serial loop (a token that fills the whole batch takes longest).
// `scratch` holds at least EncoderBackwardScratchBytes(B, T) bytes.
Status EncoderBackward(float* dwte, float* dwpe, const bf16* dout, const int32_t* inp, int B, int T,
                       int C, void* scratch, std::size_t scratch_bytes, cudaStream_t stream);

}  // namespace kiln::kernels::cuda

#endif  // KILN_KERNELS_CUDA_ENCODER_H_
