// CheckpointStore: where a training run keeps its checkpoints (checkpoint.h) —
// a directory (a path or file:///path: one file per checkpoint, written
// atomically by rename) or an object store prefix (s3://bucket/prefix:
// object_checkpoint_store.h). Both give the same guarantees: a checkpoint is
// visible only once complete, `keep` removes old ones only after the new one
// is visible, and restoring takes the newest checkpoint that verifies,
// reporting and skipping damaged ones. Not thread-safe; rank 0 alone uses it.
#ifndef KILN_WORKER_TRAIN_CHECKPOINT_STORE_H_
#define KILN_WORKER_TRAIN_CHECKPOINT_STORE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/statusor.h"
#include "worker/model/gpt.h"
#include "worker/train/checkpoint.h"

namespace kiln::train {

class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;

  // Writes `model` and `state`, then deletes all but the newest `keep`.
  // Returns where the checkpoint went (a path or URI). Errors writing are
  // Unavailable (storage is the infrastructure's) unless more specific.
  virtual StatusOr<std::string> Write(model::Gpt<float>& model, const CheckpointState& state,
                                      int keep) = 0;

  // RestoreLatestCheckpoint's contract: the newest intact checkpoint that
  // `accept` takes (null: any); nullopt when there is none; damaged ones and
  // those passed over reported through `warn` and skipped; DataLoss when
  // none is taken and some are damaged; InvalidArgument for a checkpoint of
  // another model shape.
  virtual StatusOr<std::optional<CheckpointState>> RestoreAccepted(
      model::Gpt<float>& model, const std::function<void(const std::string&)>& warn,
      const CheckpointFilter& accept) = 0;
  StatusOr<std::optional<CheckpointState>> RestoreLatest(
      model::Gpt<float>& model, const std::function<void(const std::string&)>& warn) {
    return RestoreAccepted(model, warn, nullptr);
  }

  // Deletes every checkpoint of step `step` or later (a rewind: they hold a
  // run that diverged), each made invisible before its bytes go. Returns how
  // many; Unavailable when the storage refuses.
  virtual StatusOr<int> DiscardFrom(int64_t step) = 0;

  // The fence record beside the checkpoints (fence.h: "fence.json" in the
  // directory or under the prefix); nullopt when there is none. Unavailable
  // when the storage cannot be read.
  virtual StatusOr<std::optional<std::string>> ReadFence() = 0;
  // Replaces the fence record (atomically: a reader sees the old or the new
  // one). Unavailable when the storage refuses.
  virtual Status WriteFence(const std::string& text) = 0;
};

// A store over the directory `dir` (today's files).
std::unique_ptr<CheckpointStore> NewFileCheckpointStore(std::string dir);

// The store `location` names: s3://bucket/prefix, file:///abs/path or a
// plain path. InvalidArgument for another scheme; the errors of
// storage::OpenS3Store for S3.
StatusOr<std::unique_ptr<CheckpointStore>> OpenCheckpointStore(const std::string& location);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_CHECKPOINT_STORE_H_
