// ObjectStore: a flat namespace of immutable byte objects addressed by key —
// what kiln keeps in S3 (checkpoints, token shards, manifests, models) —
// behind an interface, so the code over it is tested against an in-memory
// fake and, in integration tests, against a real S3-compatible server.
// Implementations are thread-safe.
#ifndef KILN_WORKER_STORAGE_OBJECT_STORE_H_
#define KILN_WORKER_STORAGE_OBJECT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/statusor.h"

namespace kiln::storage {

struct ObjectInfo {
  std::string key;
  int64_t size = 0;
};

// Writes one object in pieces. Nothing is visible under the key until Commit
// succeeds; destroying an uncommitted writer abandons the object (a process
// that dies mid-upload leaves nothing visible either). Not thread-safe.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  virtual Status Append(std::string_view bytes) = 0;
  // Makes the object visible with everything appended.
  virtual Status Commit() = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // How `key` is named in messages, e.g. "s3://bucket/key".
  virtual std::string Describe(const std::string& key) const = 0;
  // The whole object. NotFound when there is none.
  virtual StatusOr<std::string> Get(const std::string& key) = 0;
  // Bytes [offset, offset + length), fewer at the object's end.
  virtual StatusOr<std::string> GetRange(const std::string& key, int64_t offset,
                                         int64_t length) = 0;
  // The object's size. NotFound when there is none.
  virtual StatusOr<ObjectInfo> Stat(const std::string& key) = 0;
  // Creates or replaces the object, atomically.
  virtual Status Put(const std::string& key, std::string_view bytes) = 0;
  // A writer for a large object (see ObjectWriter).
  virtual StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(const std::string& key) = 0;
  // The objects whose keys start with `prefix`, in key order.
  virtual StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix) = 0;
  // Deletes the object; ok when there is none.
  virtual Status Delete(const std::string& key) = 0;
};

}  // namespace kiln::storage

#endif  // KILN_WORKER_STORAGE_OBJECT_STORE_H_
