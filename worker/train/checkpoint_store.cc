#include "worker/train/checkpoint_store.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "worker/data/atomic_file.h"
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

  StatusOr<std::optional<CheckpointState>> RestoreAccepted(
      model::Gpt<float>& model, const std::function<void(const std::string&)>& warn,
      const CheckpointFilter& accept) override {
    return RestoreLatestCheckpoint(dir_, model, warn, accept);
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

  StatusOr<std::optional<std::string>> ReadFence() override {
    const std::string path = FencePath();
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec) && !ec) return std::optional<std::string>();
      return Status::Unavailable("cannot read " + path);
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return Status::Unavailable("cannot read " + path);
    return std::optional<std::string>(std::move(text));
  }

  Status WriteFence(const std::string& text) override {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) return Status::Unavailable("cannot create " + dir_ + ": " + ec.message());
    auto file = data::AtomicFile::Create(FencePath());
    if (!file.ok()) return Status::Unavailable(file.status().message());
    Status s = file->Append(text.data(), text.size());
    if (s.ok()) s = file->Commit();
    return s.ok() ? s : Status::Unavailable(s.message());
  }

 private:
  std::string FencePath() const { return (std::filesystem::path(dir_) / "fence.json").string(); }

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
