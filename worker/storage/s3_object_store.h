// S3ObjectStore: an ObjectStore over one S3 bucket (s3_client.h). Large
// objects are read with parallel ranged GETs and written with parallel
// multipart uploads, each holding at most (parallel + 1) parts of
// S3Options::part_size in memory. Thread-safe.
#ifndef KILN_WORKER_STORAGE_S3_OBJECT_STORE_H_
#define KILN_WORKER_STORAGE_S3_OBJECT_STORE_H_

#include <memory>
#include <string>

#include "worker/storage/object_store.h"
#include "worker/storage/s3_client.h"

namespace kiln::storage {

class S3ObjectStore final : public ObjectStore {
 public:
  S3ObjectStore(std::shared_ptr<S3Client> client, std::string bucket);

  std::string Describe(const std::string& key) const override;
  StatusOr<std::string> Get(const std::string& key) override;
  StatusOr<std::string> GetRange(const std::string& key, int64_t offset, int64_t length) override;
  StatusOr<ObjectInfo> Stat(const std::string& key) override;
  Status Put(const std::string& key, std::string_view bytes) override;
  StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(const std::string& key) override;
  StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix) override;
  Status Delete(const std::string& key) override;

 private:
  std::shared_ptr<S3Client> client_;
  std::string bucket_;
};

// The store for the bucket of `uri` ("s3://bucket/prefix") with options from
// the environment (s3_options.h), and the key prefix. The errors of
// ParseS3Uri, S3OptionsFromEnvironment and S3Client::Create.
struct OpenedStore {
  std::shared_ptr<ObjectStore> store;
  std::string key;  // The URI's key (a prefix or an object's key).
};
StatusOr<OpenedStore> OpenS3Store(const std::string& uri);

}  // namespace kiln::storage

#endif  // KILN_WORKER_STORAGE_S3_OBJECT_STORE_H_
