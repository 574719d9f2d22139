// Client: a Kubernetes REST client for one API server, in the spirit of
// client-go's dynamic client. Objects are JSON (nlohmann::json). Requests are
// authenticated (Credentials), rate limited (QPS/burst token bucket) and
// retried with backoff on transient failures only. Every call is bounded by
// the calling thread's current Context (base/context.h), when there is one:
// the controller runtime sets it to the reconcile's. Thread-safe: share one
// Client per cluster among all workers.
#ifndef KILN_KUBE_CLIENT_H_
#define KILN_KUBE_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/context.h"
#include "base/statusor.h"
#include "base/token_bucket.h"
#include "kube/credentials.h"
#include "kube/http.h"
#include "kube/request_observer.h"
#include "kube/resource.h"
#include "kube/rest_config.h"

namespace kiln::kube {

using nlohmann::json;

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;           // Page size; 0 = no paging.
  std::string continue_token;  // From the previous page's metadata.continue.
  std::string resource_version;
  std::string resource_version_match;  // "Exact" or "NotOlderThan".
};

struct WriteOptions {
  std::string field_manager;
  bool dry_run = false;
};

struct DeleteOptions {
  std::string propagation_policy;  // "Foreground", "Background" or "Orphan".
  std::optional<int64_t> grace_period_seconds;
  std::string precondition_uid;
  std::string precondition_resource_version;
  bool dry_run = false;
};

enum class PatchType { kMerge, kStrategicMerge, kJsonPatch, kApply };

struct PatchOptions {
  std::string field_manager;  // Required for kApply.
  bool force = false;         // Server-side apply: take ownership of conflicting fields.
  bool dry_run = false;
  std::string subresource;  // e.g. "status", "scale".
};

struct ClientOptions {
  double qps = 50;  // <= 0 disables client-side rate limiting.
  int burst = 100;
  int max_retries = 5;
  std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};
  std::string user_agent;  // Default "kiln/<version>".
  // Told of every request (for metrics); must outlive the client. Optional.
  RequestObserver* observer = nullptr;
};

class Client {
 public:
  // Builds the production transport and credentials from `config`.
  static StatusOr<std::unique_ptr<Client>> New(RestConfig config, ClientOptions options = {});

  // For tests: a given transport and clock (which must outlive the client).
  Client(RestConfig config, ClientOptions options, std::unique_ptr<HttpTransport> transport,
         Clock* clock);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const RestConfig& config() const { return config_; }

  StatusOr<json> Get(const Resource& r, const std::string& ns, const std::string& name,
                     const std::string& subresource = "");
  // One page; metadata.continue holds the token for the next.
  StatusOr<json> List(const Resource& r, const std::string& ns, const ListOptions& opts = {});
  // Every page, one after the other, each handed to `on_page` (which may
  // move its items out) before the next is asked for; the continue token
  // pins the snapshot. The first error ends it.
  Status ListPages(const Resource& r, const std::string& ns, ListOptions opts,
                   const std::function<void(json& page)>& on_page);
  // Every page, joined: items of all pages, metadata of the last.
  StatusOr<json> ListAll(const Resource& r, const std::string& ns, ListOptions opts = {});
  StatusOr<json> Create(const Resource& r, const std::string& ns, const json& obj,
                        const WriteOptions& opts = {});
  // PUT of `obj` (namespace and name from its metadata). A stale
  // metadata.resourceVersion fails with a Conflict (IsConflict).
  StatusOr<json> Update(const Resource& r, const json& obj, const WriteOptions& opts = {});
  StatusOr<json> UpdateStatus(const Resource& r, const json& obj, const WriteOptions& opts = {});
  StatusOr<json> Patch(const Resource& r, const std::string& ns, const std::string& name,
                       PatchType type, const std::string& body, const PatchOptions& opts = {});
  // Server-side apply of `obj` as `field_manager`.
  StatusOr<json> Apply(const Resource& r, const json& obj, const std::string& field_manager,
                       bool force = false, const std::string& subresource = "");
  // The deleted object or the Status the server returned.
  StatusOr<json> Delete(const Resource& r, const std::string& ns, const std::string& name,
                        const DeleteOptions& opts = {});

  StatusOr<json> GetScale(const Resource& r, const std::string& ns, const std::string& name);
  StatusOr<json> SetScale(const Resource& r, const std::string& ns, const std::string& name,
                          int32_t replicas);

  // Discovery: /version, and the resources of one group version.
  StatusOr<json> ServerVersion();
  // Looks up the resource serving `kind` in `api_version` ("apps/v1").
  StatusOr<Resource> ResourceFor(const std::string& api_version, const std::string& kind);

  // One request through the client's auth, rate limit and retry policy.
  // Non-2xx responses become errors (ErrorFromResponse).
  StatusOr<HttpResponse> Request(HttpRequest request);

  // A streaming request (watches) with the same headers, authentication and
  // rate limit as Request, but no retries: see HttpTransport::Stream.
  Status Stream(HttpRequest request, const std::function<void(const HttpResponse&)>& on_head,
                const std::function<bool(std::string_view)>& on_chunk,
                const std::atomic<bool>* cancel);

 private:
  // Sets Accept, User-Agent, the default timeout and Authorization, then
  // waits for the rate limiter. Called before every attempt. Under a current
  // Context (base/context.h): fails once it is done, and caps the timeout by
  // the time it has left.
  Status Prepare(HttpRequest& request);
  // Waits `delay` before a retry: on the clock, or through the current
  // Context, which ends the wait early; false when it did.
  bool Backoff(std::chrono::milliseconds delay);
  void Observe(std::string_view method, int code, Clock::TimePoint start);
  StatusOr<json> JsonRequest(const std::string& method, const std::string& path,
                             const std::string& body = "",
                             const std::string& content_type = "application/json");

  const RestConfig config_;
  const ClientOptions options_;
  std::unique_ptr<HttpTransport> transport_;
  Clock* const clock_;
  Credentials credentials_;
  TokenBucket limiter_;
  std::mutex discovery_mu_;
  std::map<std::string, json> discovery_cache_;  // Guarded by discovery_mu_.
};

// Percent-encodes `s` for use in a URL query value.
std::string QueryEscape(const std::string& s);

// Appends "key=value" (value escaped) to `query`, starting it with '?' or
// continuing with '&'; does nothing for an empty value.
void AppendQuery(std::string& query, const std::string& key, const std::string& value);

}  // namespace kiln::kube

#endif  // KILN_KUBE_CLIENT_H_
