// ObjectCheckpointStore: checkpoints in an object store (S3) under a key
// prefix. Each checkpoint is two objects:
//   <prefix>step-<8-digit step>.ckpt           the checkpoint file's exact bytes
//                                              (checkpoint.h), written first,
//                                              as a multipart upload
//   <prefix>step-<8-digit step>.manifest.json  written last; its existence makes
//                                              the checkpoint visible
// The manifest records the data object's size, the SHA-256 of its header and
// every tensor's offset, size and SHA-256, so a reader verifies every byte.
// An upload killed halfway leaves no data object (or one without manifest)
// and so no visible checkpoint. Not thread-safe; rank 0 alone uses it.
#ifndef KILN_WORKER_TRAIN_OBJECT_CHECKPOINT_STORE_H_
#define KILN_WORKER_TRAIN_OBJECT_CHECKPOINT_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "worker/storage/object_store.h"
#include "worker/train/checkpoint_store.h"

namespace kiln::train {

class ObjectCheckpointStore final : public CheckpointStore {
 public:
  // `prefix` is a key prefix; a '/' is added when it is non-empty without one.
  ObjectCheckpointStore(std::shared_ptr<storage::ObjectStore> store, std::string prefix);

  StatusOr<std::string> Write(model::Gpt<float>& model, const CheckpointState& state,
                              int keep) override;
  StatusOr<std::optional<CheckpointState>> RestoreAccepted(
      model::Gpt<float>& model, const std::function<void(const std::string&)>& warn,
      const CheckpointFilter& accept) override;
  // Each manifest first, then its data object.
  StatusOr<int> DiscardFrom(int64_t step) override;
  // The object "fence.json" under the prefix (a single PUT: atomic).
  StatusOr<std::optional<std::string>> ReadFence() override;
  Status WriteFence(const std::string& text) override;

  // The keys of the manifests (visible checkpoints), newest step first.
  StatusOr<std::vector<std::string>> ListManifests();

  // The bytes of the checkpoint the manifest at `manifest_key` describes,
  // checked against it: size, header SHA-256, tensor table. (The tensors'
  // SHA-256s are checked when the bytes are parsed: ParseCheckpoint.)
  // DataLoss for a damaged or missing data object or manifest.
  StatusOr<std::string> FetchVerified(const std::string& manifest_key);

  // The name of the checkpoint file a manifest describes ("step-...ckpt").
  static std::string DataName(const std::string& manifest_key);

 private:
  // Whether `key` (listed under the prefix) is directly in it, not deeper.
  bool Own(const std::string& key) const;

  std::shared_ptr<storage::ObjectStore> store_;
  std::string prefix_;
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_OBJECT_CHECKPOINT_STORE_H_
