#include "worker/train/fetch_model.h"

#include <filesystem>

#include "worker/data/atomic_file.h"
#include "worker/storage/s3_object_store.h"
#include "worker/train/object_checkpoint_store.h"

namespace kiln::train {
namespace {

namespace fs = std::filesystem;

StatusOr<std::string> WriteCached(const std::string& cache_dir, const std::string& name,
                                  const std::string& bytes) {
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  // Where output goes is the infrastructure's: Unavailable (exit 3).
  if (ec) return Status::Unavailable("cannot create " + cache_dir + ": " + ec.message());
  const std::string path = (fs::path(cache_dir) / name).string();
  auto file = data::AtomicFile::Create(path);
  if (!file.ok()) return Status::Unavailable(file.status().message());
  if (Status s = file->Append(bytes.data(), bytes.size()); !s.ok()) {
    return Status::Unavailable(s.message());
  }
  if (Status s = file->Commit(); !s.ok()) return Status::Unavailable(s.message());
  return path;
}

}  // namespace

StatusOr<std::string> FetchS3Model(const std::string& uri, const std::string& cache_dir,
                                   const std::function<void(const std::string&)>& warn) {
  KILN_ASSIGN_OR_RETURN(storage::OpenedStore opened, storage::OpenS3Store(uri));
  if (!opened.key.empty() && opened.key.back() != '/') {
    auto bytes = opened.store->Get(opened.key);
    if (bytes.ok()) {
      return WriteCached(cache_dir, opened.key.substr(opened.key.find_last_of('/') + 1), *bytes);
    }
    if (bytes.status().code() != StatusCode::kNotFound ||
        bytes.status().message().find("NoSuchBucket") != std::string::npos) {
      return bytes.status();
    }
  }
  // Not an object: a prefix of checkpoints.
  ObjectCheckpointStore checkpoints(opened.store, opened.key);
  KILN_ASSIGN_OR_RETURN(auto manifests, checkpoints.ListManifests());
  if (manifests.empty()) return Status::NotFound(uri + ": no such object and no checkpoints");
  Status last;
  for (const auto& key : manifests) {
    auto bytes = checkpoints.FetchVerified(key);
    if (bytes.ok()) return WriteCached(cache_dir, ObjectCheckpointStore::DataName(key), *bytes);
    if (bytes.status().code() != StatusCode::kDataLoss) return bytes.status();
    last = bytes.status();
    warn("skipping damaged checkpoint: " + last.message());
  }
  return Status::DataLoss("every checkpoint under " + uri + " is damaged (last: " + last.message() +
                          ")");
}

}  // namespace kiln::train
