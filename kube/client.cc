#include "kube/client.h"

#include <algorithm>
#include <random>

#include "base/version.h"
#include "kube/api_error.h"

namespace kiln::kube {
namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(10);

bool IsIdempotentRead(const std::string& method) { return method == "GET" || method == "HEAD"; }

// Whether the failed attempt may be retried, and after how long at least.
std::optional<std::chrono::milliseconds> RetryDelay(const std::string& method,
                                                    const StatusOr<HttpResponse>& attempt) {
  if (!attempt.ok()) {
    // No response: only reads are safe to resend (a write may have landed),
    // and only on what the one retry policy (Status::IsRetryable) allows.
    if (IsIdempotentRead(method) && attempt.status().IsRetryable()) {
      return std::chrono::milliseconds(0);
    }
    return std::nullopt;
  }
  int code = attempt->status;
  auto ra = attempt->headers.find("retry-after");
  if ((code == 429 || code >= 500) && ra != attempt->headers.end()) {
    // The server says it did not process the request and when to come back.
    try {
      return std::chrono::seconds(std::clamp<long long>(std::stoll(ra->second), 0, 60));
    } catch (const std::exception&) {
      // An HTTP-date Retry-After: retry with the client's own backoff.
      return std::chrono::milliseconds(0);
    }
  }
  if (code == 429) return std::chrono::milliseconds(0);
  if (IsIdempotentRead(method) && (code == 500 || code == 502 || code == 503 || code == 504)) {
    return std::chrono::milliseconds(0);
  }
  return std::nullopt;
}

std::string PatchContentType(PatchType type) {
  switch (type) {
    case PatchType::kMerge:
      return "application/merge-patch+json";
    case PatchType::kStrategicMerge:
      return "application/strategic-merge-patch+json";
    case PatchType::kJsonPatch:
      return "application/json-patch+json";
    case PatchType::kApply:
      return "application/apply-patch+yaml";
  }
  return "application/json";
}

std::string WriteQuery(const std::string& field_manager, bool dry_run) {
  std::string q;
  AppendQuery(q, "fieldManager", field_manager);
  if (dry_run) AppendQuery(q, "dryRun", "All");
  return q;
}

StatusOr<std::pair<std::string, std::string>> NamespaceAndName(const Resource& r, const json& obj) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) {
    return Status::InvalidArgument(r.kind + ": object has no metadata");
  }
  const json& md = obj["metadata"];
  std::string name = md.value("name", "");
  std::string ns = md.value("namespace", "");
  if (name.empty()) return Status::InvalidArgument(r.kind + ": metadata.name is required");
  if (r.namespaced && ns.empty()) {
    return Status::InvalidArgument(r.kind + " " + name + ": metadata.namespace is required");
  }
  return std::make_pair(ns, name);
}

}  // namespace

void AppendQuery(std::string& query, const std::string& key, const std::string& value) {
  if (value.empty()) return;
  query += query.empty() ? "?" : "&";
  query += key + "=" + QueryEscape(value);
}

std::string QueryEscape(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(ch);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

StatusOr<std::unique_ptr<Client>> Client::New(RestConfig config, ClientOptions options) {
  if (config.exec) {
    // A plugin may hand out a client certificate instead of a token; the
    // transport must present it.
    Credentials probe(config);
    KILN_ASSIGN_OR_RETURN(ExecCredential cred, probe.ExecClientCertificate());
    if (!cred.client_cert_pem.empty()) {
      config.client_cert_pem = cred.client_cert_pem;
      config.client_key_pem = cred.client_key_pem;
    }
  }
  KILN_ASSIGN_OR_RETURN(auto transport, NewHttpTransport(config));
  return std::make_unique<Client>(std::move(config), std::move(options), std::move(transport),
                                  RealClock::Get());
}

Client::Client(RestConfig config, ClientOptions options, std::unique_ptr<HttpTransport> transport,
               Clock* clock)
    : config_(std::move(config)),
      options_(std::move(options)),
      transport_(std::move(transport)),
      clock_(clock),
      credentials_(config_),
      limiter_(options_.qps, options_.burst, clock) {}

Status Client::Prepare(HttpRequest& request) {
  const Context* ctx = Context::Current();
  const std::string verb = request.method + " " + request.path;
  if (ctx != nullptr) KILN_RETURN_IF_ERROR(ctx->Err().WithContext(verb));
  request.headers["Accept"] = "application/json";
  request.headers["User-Agent"] =
      options_.user_agent.empty() ? std::string("kiln/") + Version() : options_.user_agent;
  if (request.timeout == HttpRequest{}.timeout) request.timeout = options_.request_timeout;
  auto auth = credentials_.AuthorizationHeader();
  if (!auth.ok()) return auth.status().WithContext(verb);
  if (!auth->empty()) request.headers["Authorization"] = *auth;
  if (ctx == nullptr) {
    limiter_.Wait();
    return Status::Ok();
  }
  // The rate limiter's wait and the attempt both end with the context.
  const Clock::Duration wait = limiter_.Reserve();
  if (wait > Clock::Duration::zero() &&
      !ctx->Sleep(std::chrono::ceil<std::chrono::milliseconds>(wait))) {
    return ctx->Err().WithContext(verb + " (waiting for the client's rate limit)");
  }
  request.timeout = ctx->Remaining(request.timeout);
  if (request.timeout.count() == 0) return ctx->Err().WithContext(verb);
  return Status::Ok();
}

bool Client::Backoff(std::chrono::milliseconds delay) {
  const Context* ctx = Context::Current();
  if (ctx == nullptr) {
    clock_->SleepFor(delay);
    return true;
  }
  return ctx->Sleep(delay);
}

Status Client::Stream(HttpRequest request, const std::function<void(const HttpResponse&)>& on_head,
                      const std::function<bool(std::string_view)>& on_chunk,
                      const std::atomic<bool>* cancel) {
  KILN_RETURN_IF_ERROR(Prepare(request));
  if (options_.observer == nullptr) return transport_->Stream(request, on_head, on_chunk, cancel);
  const Clock::TimePoint start = clock_->Now();
  bool observed = false;
  Status s = transport_->Stream(
      request,
      [&](const HttpResponse& head) {
        observed = true;
        Observe("WATCH", head.status, start);
        on_head(head);
      },
      on_chunk, cancel);
  if (!observed) Observe("WATCH", 0, start);
  return s;
}

StatusOr<HttpResponse> Client::Request(HttpRequest request) {
  const std::string verb = request.method + " " + request.path;
  auto backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kMinBackoff);
  for (int attempt = 0;; ++attempt) {
    KILN_RETURN_IF_ERROR(Prepare(request));
    const Clock::TimePoint start = clock_->Now();
    StatusOr<HttpResponse> result = transport_->Do(request);
    Observe(request.method, result.ok() ? result->status : 0, start);
    if (result.ok() && result->status >= 200 && result->status < 300) return result;
    if (result.ok() && result->status == 401 && config_.exec && attempt == 0) {
      credentials_.Invalidate();  // The plugin's token may have been revoked early.
      continue;
    }
    auto delay = RetryDelay(request.method, result);
    if (!delay || attempt >= options_.max_retries) {
      if (!result.ok()) return result.status();
      return ErrorFromResponse(*result, verb);
    }
    // Full jitter on top of the server's floor, so retries spread out. Seeded
    // once per thread, and only when a request is actually retried.
    thread_local std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<long long> jitter(0, backoff.count());
    if (!Backoff(
            std::max<std::chrono::milliseconds>(*delay, std::chrono::milliseconds(jitter(rng))))) {
      // The context ended while waiting to retry: say both why and what failed last.
      Status last = result.ok() ? ErrorFromResponse(*result, verb) : result.status();
      return Context::Current()->Err().WithContext(verb + " (last attempt: " + last.message() +
                                                   ")");
    }
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
  }
}

void Client::Observe(std::string_view method, int code, Clock::TimePoint start) {
  if (options_.observer == nullptr) return;
  options_.observer->ObserveRequest(
      {.host = config_.server, .method = method, .code = code, .latency = clock_->Now() - start});
}

StatusOr<json> Client::JsonRequest(const std::string& method, const std::string& path,
                                   const std::string& body, const std::string& content_type) {
  HttpRequest req;
  req.method = method;
  req.path = path;
  req.body = body;
  if (!body.empty()) req.headers["Content-Type"] = content_type;
  KILN_ASSIGN_OR_RETURN(HttpResponse resp, Request(std::move(req)));
  auto doc = json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::Internal(method + " " + path +
                            ": response is not JSON: " + resp.body.substr(0, 200));
  }
  return doc;
}

StatusOr<json> Client::Get(const Resource& r, const std::string& ns, const std::string& name,
                           const std::string& subresource) {
  return JsonRequest("GET", r.Path(ns, name, subresource));
}

StatusOr<json> Client::List(const Resource& r, const std::string& ns, const ListOptions& o) {
  std::string q;
  AppendQuery(q, "labelSelector", o.label_selector);
  AppendQuery(q, "fieldSelector", o.field_selector);
  if (o.limit > 0) AppendQuery(q, "limit", std::to_string(o.limit));
  AppendQuery(q, "continue", o.continue_token);
  AppendQuery(q, "resourceVersion", o.resource_version);
  AppendQuery(q, "resourceVersionMatch", o.resource_version_match);
  return JsonRequest("GET", r.Path(ns) + q);
}

Status Client::ListPages(const Resource& r, const std::string& ns, ListOptions opts,
                         const std::function<void(json& page)>& on_page) {
  while (true) {
    KILN_ASSIGN_OR_RETURN(json page, List(r, ns, opts));
    std::string next = page["metadata"].value("continue", "");
    on_page(page);
    if (next.empty()) return Status::Ok();
    opts.continue_token = next;
    opts.resource_version.clear();  // The continue token pins the snapshot.
    opts.resource_version_match.clear();
  }
}

StatusOr<json> Client::ListAll(const Resource& r, const std::string& ns, ListOptions opts) {
  json all;
  json items = json::array();
  KILN_RETURN_IF_ERROR(ListPages(r, ns, std::move(opts), [&](json& page) {
    for (auto& item : page["items"]) items.push_back(std::move(item));
    all = std::move(page);
  }));
  all["items"] = std::move(items);
  return all;
}

StatusOr<json> Client::Create(const Resource& r, const std::string& ns, const json& obj,
                              const WriteOptions& o) {
  return JsonRequest("POST", r.Path(ns) + WriteQuery(o.field_manager, o.dry_run), obj.dump());
}

StatusOr<json> Client::Update(const Resource& r, const json& obj, const WriteOptions& o) {
  KILN_ASSIGN_OR_RETURN(auto key, NamespaceAndName(r, obj));
  return JsonRequest("PUT", r.Path(key.first, key.second) + WriteQuery(o.field_manager, o.dry_run),
                     obj.dump());
}

StatusOr<json> Client::UpdateStatus(const Resource& r, const json& obj, const WriteOptions& o) {
  KILN_ASSIGN_OR_RETURN(auto key, NamespaceAndName(r, obj));
  return JsonRequest(
      "PUT", r.Path(key.first, key.second, "status") + WriteQuery(o.field_manager, o.dry_run),
      obj.dump());
}

StatusOr<json> Client::Patch(const Resource& r, const std::string& ns, const std::string& name,
                             PatchType type, const std::string& body, const PatchOptions& o) {
  if (type == PatchType::kApply && o.field_manager.empty()) {
    return Status::InvalidArgument("server-side apply needs a field manager");
  }
  std::string q = WriteQuery(o.field_manager, o.dry_run);
  if (o.force) AppendQuery(q, "force", "true");
  return JsonRequest("PATCH", r.Path(ns, name, o.subresource) + q, body, PatchContentType(type));
}

StatusOr<json> Client::Apply(const Resource& r, const json& obj, const std::string& field_manager,
                             bool force, const std::string& subresource) {
  KILN_ASSIGN_OR_RETURN(auto key, NamespaceAndName(r, obj));
  json body = obj;
  if (!body.contains("apiVersion")) body["apiVersion"] = r.api_version();
  if (!body.contains("kind")) body["kind"] = r.kind;
  // JSON is valid YAML, so the apply content type takes it as is.
  return Patch(r, key.first, key.second, PatchType::kApply, body.dump(),
               {.field_manager = field_manager, .force = force, .subresource = subresource});
}

StatusOr<json> Client::Delete(const Resource& r, const std::string& ns, const std::string& name,
                              const DeleteOptions& o) {
  json body = {{"apiVersion", "v1"}, {"kind", "DeleteOptions"}};
  if (!o.propagation_policy.empty()) body["propagationPolicy"] = o.propagation_policy;
  if (o.grace_period_seconds) body["gracePeriodSeconds"] = *o.grace_period_seconds;
  if (!o.precondition_uid.empty()) body["preconditions"]["uid"] = o.precondition_uid;
  if (!o.precondition_resource_version.empty()) {
    body["preconditions"]["resourceVersion"] = o.precondition_resource_version;
  }
  if (o.dry_run) body["dryRun"] = json::array({"All"});
  return JsonRequest("DELETE", r.Path(ns, name), body.dump());
}

StatusOr<json> Client::GetScale(const Resource& r, const std::string& ns, const std::string& name) {
  return Get(r, ns, name, "scale");
}

StatusOr<json> Client::SetScale(const Resource& r, const std::string& ns, const std::string& name,
                                int32_t replicas) {
  json patch = {{"spec", {{"replicas", replicas}}}};
  return Patch(r, ns, name, PatchType::kMerge, patch.dump(), {.subresource = "scale"});
}

StatusOr<json> Client::ServerVersion() { return JsonRequest("GET", "/version"); }

StatusOr<Resource> Client::ResourceFor(const std::string& api_version, const std::string& kind) {
  json list;
  {
    std::lock_guard<std::mutex> lock(discovery_mu_);
    auto it = discovery_cache_.find(api_version);
    if (it != discovery_cache_.end()) list = it->second;
  }
  const bool core = api_version.find('/') == std::string::npos;
  if (list.is_null()) {
    KILN_ASSIGN_OR_RETURN(list, JsonRequest("GET", (core ? "/api/" : "/apis/") + api_version));
    std::lock_guard<std::mutex> lock(discovery_mu_);
    discovery_cache_[api_version] = list;
  }
  for (const auto& res : list.value("resources", json::array())) {
    std::string name = res.value("name", "");
    if (res.value("kind", "") == kind && name.find('/') == std::string::npos) {
      Resource out;
      auto slash = api_version.find('/');
      out.group = core ? "" : api_version.substr(0, slash);
      out.version = core ? api_version : api_version.substr(slash + 1);
      out.resource = name;
      out.kind = kind;
      out.namespaced = res.value("namespaced", false);
      return out;
    }
  }
  // The cache may predate a newly installed CRD; forget it so the next call looks again.
  std::lock_guard<std::mutex> lock(discovery_mu_);
  discovery_cache_.erase(api_version);
  return Status::NotFound("the server has no kind " + kind + " in " + api_version);
}

}  // namespace kiln::kube
