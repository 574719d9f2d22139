#include "runtime/cache_reader.h"

#include <algorithm>

namespace kiln::runtime {
namespace {

const std::string& NamespaceOf(const nlohmann::json& obj) {
  static const std::string kNone;
  auto md = obj.find("metadata");
  if (md == obj.end()) return kNone;
  auto ns = md->find("namespace");
  return ns == md->end() || !ns->is_string() ? kNone : ns->get_ref<const std::string&>();
}

}  // namespace

CacheReader::CacheReader(const kube::Informer& informer)
    : store_(informer.store()), informer_(&informer), what_(informer.resource().resource) {}

CacheReader::CacheReader(const kube::Store& store)
    : store_(store), informer_(nullptr), what_("objects") {}

Status CacheReader::Synced() const {
  if (informer_ == nullptr || informer_->HasSynced()) return Status::Ok();
  return Status::Unavailable("the " + what_ + " cache has not synced yet");
}

StatusOr<kube::Object> CacheReader::Get(const std::string& ns, const std::string& name) const {
  KILN_RETURN_IF_ERROR(Synced());
  const std::string key = ns.empty() ? name : ns + "/" + name;
  kube::Object obj = store_.Get(key);
  if (obj == nullptr) return Status::NotFound(what_ + " \"" + key + "\" not found in the cache");
  return obj;
}

StatusOr<std::vector<kube::Object>> CacheReader::List(const ListFilter& filter) const {
  KILN_RETURN_IF_ERROR(Synced());
  std::vector<kube::Object> candidates;
  if (!filter.index.empty()) {
    if (!store_.HasIndex(filter.index)) {
      return Status::InvalidArgument("the " + what_ + " cache has no index \"" + filter.index +
                                     "\"");
    }
    candidates = store_.ByIndex(filter.index, filter.index_value);
  } else if (!filter.ns.empty()) {
    candidates = store_.ByIndex(kube::kIndexNamespace, filter.ns);
  } else {
    candidates = store_.List();
  }
  std::vector<kube::Object> out;
  for (auto& obj : candidates) {
    if (!filter.ns.empty() && NamespaceOf(*obj) != filter.ns) continue;
    if (!filter.labels.MatchesObject(*obj)) continue;
    out.push_back(std::move(obj));
  }
  std::sort(out.begin(), out.end(), [](const kube::Object& a, const kube::Object& b) {
    return kube::Store::KeyOf(*a) < kube::Store::KeyOf(*b);
  });
  return out;
}

}  // namespace kiln::runtime
