#include "kube/informer.h"

#include <algorithm>
#include <set>

#include "kube/api_error.h"

namespace kiln::kube {
namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(200);
constexpr auto kMaxBackoff = std::chrono::seconds(30);

std::string ResourceVersionOf(const json& obj) {
  auto md = obj.find("metadata");
  if (md == obj.end()) return "";
  return md->value("resourceVersion", "");
}

}  // namespace

Informer::Informer(Client& client, Resource resource, InformerOptions options)
    : client_(client), resource_(std::move(resource)), options_(std::move(options)) {}

Informer::~Informer() { Stop(); }

void Informer::AddHandlers(EventHandlers handlers) { handlers_.push_back(std::move(handlers)); }

Status Informer::AddIndex(const std::string& name, IndexFunc func) {
  if (started_.load()) {
    return Status::FailedPrecondition("index \"" + name + "\" added to the " + resource_.resource +
                                      " informer after it started");
  }
  return store_.AddIndex(name, std::move(func));
}

Status Informer::SetTransform(std::function<json(json)> transform) {
  if (started_.load()) {
    return Status::FailedPrecondition("transform set on the " + resource_.resource +
                                      " informer after it started");
  }
  transform_ = std::move(transform);
  return Status::Ok();
}

void Informer::Start() {
  started_ = true;
  next_resync_ = std::chrono::steady_clock::now() + options_.resync;
  thread_ = std::thread([this] { Run(); });
}

void Informer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::WaitForSync(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!synced_.load()) {
    if (std::chrono::steady_clock::now() > deadline || stop_.load()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

InformerStats Informer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

Status Informer::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

bool Informer::SleepUnlessStopped(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

Object Informer::Prepare(json obj) const {
  if (options_.strip_managed_fields && obj.contains("metadata")) {
    obj["metadata"].erase("managedFields");
  }
  if (transform_) obj = transform_(std::move(obj));
  return std::make_shared<const json>(std::move(obj));
}

void Informer::Dispatch(EventType type, const Object& old, const Object& now) {
  for (const auto& h : handlers_) {
    switch (type) {
      case EventType::kAdded:
        if (h.on_add) h.on_add(now);
        break;
      case EventType::kModified:
        if (h.on_update) h.on_update(old, now);
        break;
      case EventType::kDeleted:
        if (h.on_delete) h.on_delete(old);
        break;
      case EventType::kBookmark:
        break;
    }
  }
}

void Informer::Resync() {
  if (options_.resync.count() <= 0 || std::chrono::steady_clock::now() < next_resync_) return;
  next_resync_ = std::chrono::steady_clock::now() + options_.resync;
  for (const auto& obj : store_.List()) Dispatch(EventType::kModified, obj, obj);
}

Status Informer::ListAndSync(std::string& resource_version) {
  ListOptions lo{.label_selector = options_.label_selector,
                 .field_selector = options_.field_selector,
                 .limit = options_.page_size};
  // Page by page, each object prepared (and transformed) as its page
  // arrives: the whole list is never held as the server sent it, which
  // for a large cluster was the watcher's peak of memory.
  std::vector<Object> listed;
  std::string list_version;
  KILN_RETURN_IF_ERROR(client_.ListPages(resource_, options_.ns, lo, [&](json& page) {
    for (auto& item : page["items"]) listed.push_back(Prepare(std::move(item)));
    list_version = page["metadata"].value("resourceVersion", "");
  }));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.lists;
  }
  // Diff against the cache: only real changes reach the handlers.
  std::set<std::string> seen;
  for (Object& now : listed) {
    std::string key = Store::KeyOf(*now);
    seen.insert(key);
    Object old = store_.Get(key);
    if (old && ResourceVersionOf(*old) == ResourceVersionOf(*now)) continue;
    store_.Upsert(now);
    Dispatch(old ? EventType::kModified : EventType::kAdded, old, now);
  }
  for (const auto& key : store_.Keys()) {
    if (seen.count(key) == 0) {
      Object gone = store_.Remove(key);
      if (gone) Dispatch(EventType::kDeleted, gone, nullptr);
    }
  }
  resource_version = list_version;
  synced_ = true;
  return Status::Ok();
}

Status Informer::Watch(std::string& resource_version) {
  WatchOptions wo{.label_selector = options_.label_selector,
                  .field_selector = options_.field_selector,
                  .resource_version = resource_version,
                  .timeout_seconds = options_.watch_timeout_seconds,
                  .allow_bookmarks = options_.allow_bookmarks};
  return WatchOnce(
      client_, resource_, options_.ns, wo,
      [&](WatchEvent& ev) {
        std::string rv = ResourceVersionOf(ev.object);
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++stats_.events;
        }
        if (ev.type == EventType::kBookmark) {
          if (!rv.empty()) resource_version = rv;
          return !stop_.load();
        }
        Object now = Prepare(std::move(ev.object));
        std::string key = Store::KeyOf(*now);
        if (ev.type == EventType::kDeleted) {
          Object old = store_.Remove(key);
          if (old) Dispatch(EventType::kDeleted, old, nullptr);
        } else {
          Object old = store_.Get(key);
          if (!old || ResourceVersionOf(*old) != rv) {
            store_.Upsert(now);
            Dispatch(old ? EventType::kModified : EventType::kAdded, old, now);
          }
        }
        if (!rv.empty()) resource_version = rv;
        Resync();
        return !stop_.load();
      },
      &stop_);
}

void Informer::Run() {
  std::string rv;
  bool need_list = true;
  bool first_watch = true;
  auto backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kMinBackoff);
  while (!stop_.load()) {
    Status s;
    if (need_list) {
      s = ListAndSync(rv);
      if (s.ok()) need_list = false;
    } else {
      if (!first_watch) {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.watch_restarts;
      }
      first_watch = false;
      s = Watch(rv);
      if (IsResourceExpired(s)) {
        // Our resourceVersion was compacted away: start over from a fresh list.
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.relists_after_expiry;
        need_list = true;
        last_error_ = Status::Ok();
        continue;
      }
    }
    Resync();
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_error_ = s;
    }
    if (s.ok()) {
      backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kMinBackoff);
      continue;  // A watch ended at its timeout: rotate from the last version.
    }
    if (!SleepUnlessStopped(backoff)) break;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
  }
}

}  // namespace kiln::kube
