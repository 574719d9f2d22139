#include "worker/train/checkpoint_store.h"

#include <filesystem>

#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"
#include "worker/train/object_checkpoint_store.h"

namespace kiln::train {
namespace {

class FileCheckpointStore final : public CheckpointStore {
 public:
  explicit FileCheckpointStore(std::string dir) : dir_(std::move(dir)) {}

  StatusOr<std::string> Write(model::Gpt<float>& model, const CheckpointState& state,
                              int keep) override {
    return WriteCheckpoint(dir_, model, state, keep);
  }

  StatusOr<std::optional<CheckpointState>> RestoreLatest(
      model::Gpt<float>& model, const std::function<void(const std::string&)>& warn) override {
    return RestoreLatestCheckpoint(dir_, model, warn);
  }

  StatusOr<int> DiscardFrom(int64_t step) override {
    KILN_ASSIGN_OR_RETURN(auto all, ListCheckpoints(dir_));
    int discarded = 0;
    for (const std::string& path : all) {
      auto at = CheckpointStepOf(path, ".ckpt");
      if (!at || *at < step) continue;
      std::error_code ec;
      std::filesystem::remove(path, ec);
      if (ec) return Status::Unavailable("cannot delete " + path + ": " + ec.message());
      ++discarded;
    }
    return discarded;
  }

 private:
  std::string dir_;
};

}  // namespace

std::unique_ptr<CheckpointStore> NewFileCheckpointStore(std::string dir) {
  return std::make_unique<FileCheckpointStore>(std::move(dir));
}

StatusOr<std::unique_ptr<CheckpointStore>> OpenCheckpointStore(const std::string& location) {
  if (storage::IsS3Uri(location)) {
    KILN_ASSIGN_OR_RETURN(storage::OpenedStore opened, storage::OpenS3Store(location));
    return std::unique_ptr<CheckpointStore>(
        std::make_unique<ObjectCheckpointStore>(opened.store, opened.key));
  }
  if (location.rfind("file://", 0) == 0) {
    const std::string path = location.substr(7);
    if (path.empty() || path[0] != '/') {
      return Status::InvalidArgument("checkpoint location \"" + location +
                                     "\" is not file:///absolute/path");
    }
    return NewFileCheckpointStore(path);
  }
  if (location.find("://") != std::string::npos) {
    return Status::InvalidArgument("checkpoint location \"" + location +
                                   "\": only s3:// and file:// URIs, or a path");
  }
  return NewFileCheckpointStore(location);
}

}  // namespace kiln::train
