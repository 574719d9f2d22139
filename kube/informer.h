// Informer: keeps a Store in step with the server for one resource — list,
// then watch from the list's resourceVersion, following bookmarks, rotating
// the watch every timeout, reconnecting with backoff, and re-listing when the
// server answers 410 Gone — and calls handlers for every change. A re-list is
// diffed against the cache, so handlers see each change once: no event lost,
// none delivered twice. Handlers run on the informer's own thread, in order.
// Thread-safe; Start once, Stop (or destroy) to end.
#ifndef KILN_KUBE_INFORMER_H_
#define KILN_KUBE_INFORMER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kube/client.h"
#include "kube/store.h"
#include "kube/watch.h"

namespace kiln::kube {

struct EventHandlers {
  std::function<void(const Object&)> on_add;
  // Also called by periodic resync, with old == now.
  std::function<void(const Object& old, const Object& now)> on_update;
  std::function<void(const Object&)> on_delete;
};

struct InformerOptions {
  std::string ns;  // Empty: all namespaces.
  std::string label_selector;
  std::string field_selector;
  int64_t page_size = 500;
  std::chrono::milliseconds resync{0};  // 0 disables periodic resync.
  int watch_timeout_seconds = 300;
  bool allow_bookmarks = true;
  // Drop metadata.managedFields from cached objects (often half their size).
  bool strip_managed_fields = true;

  bool operator==(const InformerOptions&) const = default;
};

struct InformerStats {
  int64_t lists = 0;
  int64_t relists_after_expiry = 0;
  int64_t watch_restarts = 0;  // Every new watch after the first.
  int64_t events = 0;
};

class Informer {
 public:
  // `client` must outlive the informer.
  Informer(Client& client, Resource resource, InformerOptions options = {});
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Registers handlers; call before Start.
  void AddHandlers(EventHandlers handlers);
  // Adds an index to the store (rules in Store::AddIndex). Refused with
  // FailedPrecondition once started: an index must exist before the first
  // list so that every object is filed under it from the start.
  Status AddIndex(const std::string& name, IndexFunc func);
  // Makes each object `transform(object)` before it is cached and handed to
  // the handlers (after managedFields go), e.g. to keep only the fields its
  // readers use: a cache of whole objects is most of a large watcher's
  // memory. The result must keep metadata.name, namespace and
  // resourceVersion. Refused with FailedPrecondition once started.
  Status SetTransform(std::function<json(json)> transform);
  void Start();
  // Stops the watch and joins the thread; handlers are not called afterwards.
  void Stop();

  // True once the first list has been delivered to the handlers.
  bool HasSynced() const { return synced_.load(); }
  // Waits up to `timeout` for HasSynced.
  bool WaitForSync(std::chrono::milliseconds timeout);

  const Resource& resource() const { return resource_; }
  const InformerOptions& options() const { return options_; }
  // The client this informer watches through: which cluster it belongs to.
  const Client& client() const { return client_; }
  bool started() const { return started_.load(); }
  const Store& store() const { return store_; }
  Store& mutable_store() { return store_; }
  InformerStats stats() const;
  // The last error the loop hit (ok when healthy), for health reporting.
  Status last_error() const;

 private:
  void Run();
  Status ListAndSync(std::string& resource_version);
  Status Watch(std::string& resource_version);
  Object Prepare(json obj) const;
  void Dispatch(EventType type, const Object& old, const Object& now);
  void Resync();
  bool SleepUnlessStopped(std::chrono::milliseconds d);

  Client& client_;
  const Resource resource_;
  const InformerOptions options_;
  Store store_;
  std::vector<EventHandlers> handlers_;
  std::function<json(json)> transform_;  // Set before Start; may be empty.
  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::atomic<bool> started_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  InformerStats stats_;  // Guarded by mu_.
  Status last_error_;    // Guarded by mu_.
  std::chrono::steady_clock::time_point next_resync_;
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_INFORMER_H_
