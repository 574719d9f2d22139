// llm.c's GPT-2 model files (gpt2_124M.bin and the like, written by llm.c's
// train_gpt2.py and read by train_gpt2.c / train_gpt2.cu), as an import and
// export format for kiln's model: a header of 256 little-endian int32 —
// magic 20240326, version (3: float32 parameters, 5: bf16), max_seq_len,
// vocab_size, num_layers, num_heads, channels, padded_vocab_size, the rest
// zero — then every parameter tensor in model::Param order, which is llm.c's
// order and layout. Parameters only: no optimizer state, step or data
// position (a kiln checkpoint holds those).
#ifndef KILN_WORKER_TRAIN_LLMC_CHECKPOINT_H_
#define KILN_WORKER_TRAIN_LLMC_CHECKPOINT_H_

#include <string>

#include "base/statusor.h"
#include "worker/model/gpt.h"

namespace kiln::train {

enum class LlmcPrecision { kFloat32, kBf16 };

// Whether the file at `path` starts with llm.c's model magic.
bool IsLlmcCheckpoint(const std::string& path);

// The model in the file (bf16 widened exactly to float; Adam moments zero).
// NotFound for a missing file; DataLoss for a bad magic, an unknown version
// or a truncated or oversized file; InvalidArgument for a header whose shape
// kiln cannot build (GptConfig::Validate's message).
StatusOr<model::Gpt<float>> ReadLlmcCheckpoint(const std::string& path);

// Writes `model`'s parameters (bf16: rounded to nearest even), atomically
// (a temporary file renamed into place). Errors as data::AtomicFile's.
Status WriteLlmcCheckpoint(const std::string& path, const model::Gpt<float>& model,
                           LlmcPrecision precision = LlmcPrecision::kFloat32);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_LLMC_CHECKPOINT_H_
