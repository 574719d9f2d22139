// FakeReader: an in-memory Reader for unit tests, filled by the test. It
// answers through a CacheReader over its own Store, so Get, List, selectors
// and indexes behave exactly as they do against an informer's cache.
// Thread-safe.
#ifndef KILN_RUNTIME_FAKE_READER_H_
#define KILN_RUNTIME_FAKE_READER_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/store.h"
#include "runtime/cache_reader.h"
#include "runtime/reader.h"

namespace kiln::runtime {

class FakeReader final : public Reader {
 public:
  // Starts with `objects` (each with metadata.name, and namespace if namespaced).
  explicit FakeReader(const std::vector<nlohmann::json>& objects = {}) : reader_(store_) {
    for (const auto& o : objects) Put(o);
  }
  FakeReader(const FakeReader&) = delete;
  FakeReader& operator=(const FakeReader&) = delete;

  // Inserts or replaces an object.
  void Put(nlohmann::json object) {
    store_.Upsert(std::make_shared<const nlohmann::json>(std::move(object)));
  }
  // Removes `ns`/`name` if present.
  void Delete(const std::string& ns, const std::string& name) {
    store_.Remove(ns.empty() ? name : ns + "/" + name);
  }
  // As Store::AddIndex.
  Status AddIndex(const std::string& name, kube::IndexFunc func) {
    return store_.AddIndex(name, std::move(func));
  }

  StatusOr<kube::Object> Get(const std::string& ns, const std::string& name) const override {
    return reader_.Get(ns, name);
  }
  StatusOr<std::vector<kube::Object>> List(const ListFilter& filter = {}) const override {
    return reader_.List(filter);
  }

 private:
  kube::Store store_;
  CacheReader reader_;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_FAKE_READER_H_
