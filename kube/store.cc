#include "kube/store.h"

namespace kiln::kube {

using nlohmann::json;

namespace {
const json& Metadata(const json& o) {
  static const json kEmpty = json::object();
  auto it = o.find("metadata");
  return it != o.end() && it->is_object() ? *it : kEmpty;
}
}  // namespace

Store::Store() {
  index_funcs_[kIndexNamespace] = [](const json& o) {
    std::string ns = Metadata(o).value("namespace", "");
    return ns.empty() ? std::vector<std::string>{} : std::vector<std::string>{ns};
  };
  index_funcs_[kIndexOwner] = [](const json& o) {
    std::vector<std::string> uids;
    const json& md = Metadata(o);
    auto refs = md.find("ownerReferences");
    if (refs == md.end() || !refs->is_array()) return uids;
    for (const auto& ref : *refs) {
      uids.push_back(ref.value("uid", ""));
    }
    return uids;
  };
  index_funcs_[kIndexLabel] = [](const json& o) {
    std::vector<std::string> out;
    const json& md = Metadata(o);
    auto labels = md.find("labels");
    if (labels == md.end() || !labels->is_object()) return out;
    for (const auto& [k, v] : labels->items()) {
      if (v.is_string()) out.push_back(k + "=" + v.get<std::string>());
    }
    return out;
  };
}

std::string Store::KeyOf(const json& obj) {
  const json& md = Metadata(obj);
  std::string ns = md.value("namespace", "");
  std::string name = md.value("name", "");
  return ns.empty() ? name : ns + "/" + name;
}

Status Store::AddIndex(const std::string& name, IndexFunc func) {
  using Plain = std::vector<std::string> (*)(const json&);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_funcs_.find(name); it != index_funcs_.end()) {
    const Plain* had = it->second.target<Plain>();
    const Plain* now = func.target<Plain>();
    if (had != nullptr && now != nullptr && *had == *now) return Status::Ok();
    return Status::AlreadyExists("index \"" + name +
                                 "\" is already registered with another function");
  }
  index_funcs_[name] = std::move(func);
  for (const auto& [key, obj] : items_) {
    for (const auto& v : index_funcs_[name](*obj)) indexes_[name][v].insert(key);
  }
  return Status::Ok();
}

bool Store::HasIndex(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_funcs_.count(name) > 0;
}

void Store::IndexLocked(const std::string& key, const json& obj, bool add) {
  for (const auto& [name, func] : index_funcs_) {
    auto& index = indexes_[name];
    for (const auto& value : func(obj)) {
      if (add) {
        index[value].insert(key);
      } else if (auto it = index.find(value); it != index.end()) {
        it->second.erase(key);
        if (it->second.empty()) index.erase(it);
      }
    }
  }
}

Object Store::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? nullptr : it->second;
}

std::vector<Object> Store::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Object> out;
  out.reserve(items_.size());
  for (const auto& [key, obj] : items_) out.push_back(obj);
  return out;
}

std::vector<std::string> Store::Keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& [key, obj] : items_) out.push_back(key);
  return out;
}

std::vector<Object> Store::ByIndex(const std::string& index, const std::string& value) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Object> out;
  auto idx = indexes_.find(index);
  if (idx == indexes_.end()) return out;
  auto keys = idx->second.find(value);
  if (keys == idx->second.end()) return out;
  for (const auto& key : keys->second) out.push_back(items_.at(key));
  return out;
}

size_t Store::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.size();
}

Object Store::Upsert(Object obj) {
  std::string key = KeyOf(*obj);
  std::lock_guard<std::mutex> lock(mu_);
  Object old;
  if (auto it = items_.find(key); it != items_.end()) {
    old = it->second;
    IndexLocked(key, *old, false);
  }
  IndexLocked(key, *obj, true);
  items_[key] = std::move(obj);
  return old;
}

Object Store::Remove(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  if (it == items_.end()) return nullptr;
  Object old = it->second;
  IndexLocked(key, *old, false);
  items_.erase(it);
  return old;
}

}  // namespace kiln::kube
