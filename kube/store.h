// Store: the informer's cache of objects, keyed "namespace/name" (or "name"
// for cluster-scoped objects), with secondary indexes. Objects are immutable
// shared JSON values, so readers hold them without copying. Thread-safe.
#ifndef KILN_KUBE_STORE_H_
#define KILN_KUBE_STORE_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace kiln::kube {

using Object = std::shared_ptr<const nlohmann::json>;

// Index functions return the values an object is filed under in one index.
using IndexFunc = std::function<std::vector<std::string>(const nlohmann::json&)>;

// Built-in indexes every Store has.
inline constexpr const char* kIndexNamespace = "namespace";
inline constexpr const char* kIndexOwner = "owner";  // ownerReferences[].uid
inline constexpr const char* kIndexLabel = "label";  // "key=value" per label

class Store {
 public:
  Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static std::string KeyOf(const nlohmann::json& obj);

  // Adds an index and files the objects already held under it. A name is
  // registered once: again with the same plain function (a function pointer)
  // is a no-op, with any other function (or over a built-in) AlreadyExists,
  // since two callers would otherwise read different things under one name.
  Status AddIndex(const std::string& name, IndexFunc func);
  bool HasIndex(const std::string& name) const;

  Object Get(const std::string& key) const;
  std::vector<Object> List() const;
  std::vector<std::string> Keys() const;
  // Objects filed under `value` in index `index`; empty for an unknown index.
  std::vector<Object> ByIndex(const std::string& index, const std::string& value) const;
  size_t size() const;

  // Inserts or replaces; returns the previous object (null if none).
  Object Upsert(Object obj);
  // Removes `key`; returns what was there (null if nothing).
  Object Remove(const std::string& key);

 private:
  void IndexLocked(const std::string& key, const nlohmann::json& obj, bool add);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Object> items_;
  std::map<std::string, IndexFunc> index_funcs_;
  // index name -> value -> keys
  std::map<std::string, std::unordered_map<std::string, std::set<std::string>>> indexes_;
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_STORE_H_
