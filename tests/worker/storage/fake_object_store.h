// FakeObjectStore: an in-memory ObjectStore for unit tests of the code over
// the interface (checkpoints, shards). Objects are visible once Put or a
// writer's Commit; a dropped writer leaves nothing. Thread-safe.
#ifndef KILN_TESTS_WORKER_STORAGE_FAKE_OBJECT_STORE_H_
#define KILN_TESTS_WORKER_STORAGE_FAKE_OBJECT_STORE_H_

#include <map>
#include <mutex>

#include "worker/storage/object_store.h"

namespace kiln::storage::testing {

class FakeObjectStore final : public ObjectStore {
 public:
  std::string Describe(const std::string& key) const override { return "fake://" + key; }

  StatusOr<std::string> Get(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return Status::NotFound(Describe(key) + ": NoSuchKey");
    return it->second;
  }
  StatusOr<std::string> GetRange(const std::string& key, int64_t offset, int64_t length) override {
    KILN_ASSIGN_OR_RETURN(std::string all, Get(key));
    if (offset >= static_cast<int64_t>(all.size())) return std::string();
    return all.substr(static_cast<size_t>(offset), static_cast<size_t>(length));
  }
  StatusOr<ObjectInfo> Stat(const std::string& key) override {
    KILN_ASSIGN_OR_RETURN(std::string all, Get(key));
    return ObjectInfo{key, static_cast<int64_t>(all.size())};
  }
  Status Put(const std::string& key, std::string_view bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    objects_[key] = std::string(bytes);
    return Status::Ok();
  }
  StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(const std::string& key) override {
    return std::unique_ptr<ObjectWriter>(std::make_unique<Writer>(this, key));
  }
  StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ObjectInfo> out;
    for (const auto& [key, bytes] : objects_) {
      if (key.rfind(prefix, 0) == 0) out.push_back({key, static_cast<int64_t>(bytes.size())});
    }
    return out;
  }
  Status Delete(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    objects_.erase(key);
    return Status::Ok();
  }

  // The keys, in order.
  std::vector<std::string> Keys() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [key, bytes] : objects_) out.push_back(key);
    return out;
  }
  // Direct access for damaging objects.
  std::string& Object(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return objects_[key];
  }

 private:
  class Writer final : public ObjectWriter {
   public:
    Writer(FakeObjectStore* store, std::string key) : store_(store), key_(std::move(key)) {}
    Status Append(std::string_view bytes) override {
      buffer_.append(bytes);
      return Status::Ok();
    }
    Status Commit() override { return store_->Put(key_, buffer_); }

   private:
    FakeObjectStore* store_;
    std::string key_;
    std::string buffer_;
  };

  std::mutex mu_;
  std::map<std::string, std::string> objects_;
};

}  // namespace kiln::storage::testing

#endif  // KILN_TESTS_WORKER_STORAGE_FAKE_OBJECT_STORE_H_
