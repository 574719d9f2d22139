// Checkpoints of a training run: the model's parameters, the AdamW moments,
// the step and the data loader's position — everything needed to resume
// exactly (bit for bit on the CPU with the same thread count).
// RNG state: the engine draws random numbers only from counter-based streams
// keyed by the seed — the weight initialisation and each epoch's shard order
// (a function of seed and epoch) — and has no dropout, so the seed (plus the
// step and data position already saved) is the whole generator state.
//
// File format, version 1 (`<dir>/step-<8-digit step>.ckpt`, little-endian):
//   8 bytes   magic "KILNCKPT"
//   4 bytes   format version (1)
//   4 bytes   header length H
//   H bytes   JSON header: {"step", "position": {...}, "rng": {"seed"},
//             "model": {layers, heads, channels, maxSeqLen, vocabSize,
//             paddedVocabSize}, "writer": {"job", "attempt"} (fence.h; absent
//             when the run had no fence token),
//             "tensors": [{"name", "offset", "bytes", "sha256"}...]}
//   then the tensors' bytes (float32) at their offsets after the header.
// Written atomically (temporary file, fsync, rename, directory fsync); the
// newest `keep` are kept. Loading verifies the magic, version, header, sizes
// and every tensor's SHA-256, and falls back to the previous checkpoint when
// one is damaged.
#ifndef KILN_WORKER_TRAIN_CHECKPOINT_H_
#define KILN_WORKER_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/data/loader.h"
#include "worker/model/gpt.h"

namespace kiln::train {

// Which attempt of which job wrote a checkpoint (fence.h): the operator's
// fence token, the TrainingJob's UID and the attempt number.
struct CheckpointWriter {
  std::string job;
  int64_t attempt = 0;
  bool operator==(const CheckpointWriter&) const = default;
};

struct CheckpointState {
  int64_t step = 0;
  data::Position position;
  // The run's seed; unset in checkpoints written before it was recorded.
  std::optional<uint64_t> seed;
  // The fence token of the run that wrote it; unset for a run without one.
  std::optional<CheckpointWriter> writer;
};

// Whether a restore may take an intact checkpoint: OK, or why it is passed
// over (reported through the restore's `warn`). Null takes every one.
using CheckpointFilter = std::function<Status(const CheckpointState&)>;

// Writes `model` (parameters and AdamW moments) and `state` to `dir` and
// deletes all but the newest `keep` checkpoints there. Returns the path.
// First removes the partial files of writes killed before they finished (a
// directory has one writer: rank 0 of the run holding its fence).
StatusOr<std::string> WriteCheckpoint(const std::string& dir, model::Gpt<float>& model,
                                      const CheckpointState& state, int keep);

// The checkpoint files in `dir`, newest step first.
StatusOr<std::vector<std::string>> ListCheckpoints(const std::string& dir);

// Restores the newest intact checkpoint in `dir` that `accept` takes into
// `model`. nullopt when there is none at all. A damaged one (bad magic,
// truncated, a tensor's or the header's checksum mismatch) is reported through `warn` and skipped
// for the one before it, and so is one `accept` passes over; DataLoss when none is taken and at
// least one is damaged. InvalidArgument when a checkpoint's model shape differs from `model`'s
// (that is a configuration error, not damage).
StatusOr<std::optional<CheckpointState>> RestoreLatestCheckpoint(
    const std::string& dir, model::Gpt<float>& model,
    const std::function<void(const std::string&)>& warn, const CheckpointFilter& accept = nullptr);

// The model shape recorded in the checkpoint file at `path` (reading only its
// header). DataLoss for a file that is not a readable kiln checkpoint,
// NotFound when there is none.
StatusOr<model::GptConfig> ReadCheckpointConfig(const std::string& path);

// Loads the checkpoint file at `path` into `model`, which must have its shape
// (ReadCheckpointConfig), after verifying every tensor's SHA-256. DataLoss
// naming the damage; InvalidArgument for a different shape.
StatusOr<CheckpointState> LoadCheckpoint(const std::string& path, model::Gpt<float>& model);

// The pieces the object-store checkpoints (checkpoint_store.h) share with the
// files: the same bytes, laid out the same way.

// "step-<8-digit step>.ckpt".
std::string CheckpointFileName(int64_t step);

// The step in a checkpoint's name "step-<digits><suffix>" (a path or key's
// last part); none when `name` is not one.
std::optional<int64_t> CheckpointStepOf(const std::string& name, const std::string& suffix);

// The file's first bytes: magic, version (2), header length, the JSON header
// (with every tensor's offset, size and SHA-256) for `model` at `state`, and
// the SHA-256 (64 hex digits) of all of those. Version 1, without the last,
// is still read.
std::string EncodeCheckpointHeader(model::Gpt<float>& model, const CheckpointState& state);

// The tensors' bytes, in the order and at the offsets the header gives.
std::vector<std::string_view> CheckpointTensorBytes(model::Gpt<float>& model);

// The JSON header from a checkpoint's first bytes (at least up to the
// header's end); `path` names it in errors. DataLoss when it is not one.
StatusOr<nlohmann::json> ParseCheckpointHeader(std::string_view prefix, const std::string& path);

// The DataLoss message of a restore in `where` that took none of `all`
// checkpoints, `damaged` of them damaged and the rest passed over.
std::string NoneTaken(const std::string& where, size_t damaged, size_t all);

// LoadCheckpoint over a whole checkpoint already in memory.
StatusOr<CheckpointState> ParseCheckpoint(std::string_view file, const std::string& path,
                                          model::Gpt<float>& model);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_CHECKPOINT_H_
