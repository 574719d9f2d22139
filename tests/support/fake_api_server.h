// FakeApiServer: an in-memory Kubernetes API server behind the HttpTransport
// interface, enough for the controllers' unit tests (TrainingJob,
// ModelDeployment, the fleet's quarantine): get, list
// (label selectors), create, update (and /status), merge patch (with the
// resourceVersion precondition), delete (finalizers hold an object until they
// are gone), and a pod proxy answered by a test-supplied function. Objects
// are keyed by resource, namespace and name; every write bumps the
// resourceVersion. Thread-safe.
#ifndef KILN_TESTS_SUPPORT_FAKE_API_SERVER_H_
#define KILN_TESTS_SUPPORT_FAKE_API_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kube/http.h"
#include "kube/label_selector.h"

namespace kiln::testing {

class FakeApiServer final : public kube::HttpTransport {
  class Lent final : public kube::HttpTransport {
   public:
    explicit Lent(FakeApiServer& api) : api_(api) {}
    StatusOr<kube::HttpResponse> Do(const kube::HttpRequest& r) override { return api_.Do(r); }
    Status Stream(const kube::HttpRequest& r,
                  const std::function<void(const kube::HttpResponse&)>& h,
                  const std::function<bool(std::string_view)>& c,
                  const std::atomic<bool>* cancel) override {
      return api_.Stream(r, h, c, cancel);
    }

   private:
    FakeApiServer& api_;
  };

 public:
  using json = nlohmann::json;

  // A transport for a client, which owns its transport, that lends it this
  // server (which must outlive it).
  std::unique_ptr<kube::HttpTransport> Transport() { return std::make_unique<Lent>(*this); }
  // Answers GET .../pods/<pod>:<port>/proxy/<path>.
  using ProxyHandler =
      std::function<kube::HttpResponse(const std::string& ns, const std::string& pod,
                                       const std::string& port, const std::string& path)>;

  // The stored object, if any. `resource` is the plural ("pods", "nodes",
  // "trainingjobs"); `ns` is empty for cluster-scoped ones.
  std::optional<json> Object(const std::string& resource, const std::string& ns,
                             const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find(Key(resource, ns, name));
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }
  // Every stored object of `resource` in `ns` (all namespaces when empty).
  std::vector<json> Objects(const std::string& resource, const std::string& ns = "") {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<json> out;
    for (const auto& [key, obj] : objects_) {
      if (key.resource == resource && (ns.empty() || key.ns == ns)) out.push_back(obj);
    }
    return out;
  }
  // Stores `obj` as is (a new resourceVersion), as a controller or kubelet
  // elsewhere would have written it.
  void Put(const std::string& resource, json obj) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string ns = obj["metadata"].value("namespace", "");
    const std::string name = obj["metadata"].value("name", "");
    obj["metadata"]["resourceVersion"] = std::to_string(++version_);
    if (!obj["metadata"].contains("uid")) obj["metadata"]["uid"] = "uid-" + name;
    objects_[Key(resource, ns, name)] = std::move(obj);
  }
  void Remove(const std::string& resource, const std::string& ns, const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    objects_.erase(Key(resource, ns, name));
  }
  void SetProxy(ProxyHandler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    proxy_ = std::move(handler);
  }
  // "METHOD path" of every request so far.
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

  // The grace period each DELETE asked for, by "resource/name" (-1: none
  // given, the object's own).
  std::map<std::string, int64_t> delete_grace() {
    std::lock_guard<std::mutex> lock(mu_);
    return delete_grace_;
  }

  StatusOr<kube::HttpResponse> Do(const kube::HttpRequest& request) override {
    std::unique_lock<std::mutex> lock(mu_);
    requests_.push_back(request.method + " " + request.path);
    const size_t q = request.path.find('?');
    const std::string path = request.path.substr(0, q);
    const std::string query = q == std::string::npos ? "" : request.path.substr(q + 1);
    std::vector<std::string> parts;
    for (size_t start = 1; start <= path.size();) {
      size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      parts.push_back(path.substr(start, end - start));
      start = end + 1;
    }
    // /api/v1/... or /apis/<group>/<version>/...
    size_t i = parts.size() > 0 && parts[0] == "api" ? 2 : 3;
    std::string ns;
    if (i + 2 < parts.size() && parts[i] == "namespaces") {
      ns = parts[i + 1];
      i += 2;
    }
    if (i >= parts.size()) return Error(404, "NotFound", "no resource in " + path);
    const std::string resource = parts[i];
    const std::string name = i + 1 < parts.size() ? parts[i + 1] : "";
    const std::string sub = i + 2 < parts.size() ? parts[i + 2] : "";
    if (sub == "proxy") {
      std::string rest;
      for (size_t k = i + 3; k < parts.size(); ++k) rest += "/" + parts[k];
      const size_t colon = name.find(':');
      ProxyHandler handler = proxy_;
      lock.unlock();
      if (!handler) return Error(503, "ServiceUnavailable", "no proxy");
      return handler(ns, name.substr(0, colon),
                     colon == std::string::npos ? "" : name.substr(colon + 1), rest);
    }
    const Key key = Key(resource, ns, name);
    json body = request.body.empty() ? json() : json::parse(request.body, nullptr, false);
    if (request.method == "GET" && name.empty()) {
      std::string selector;
      const std::string prefix = "labelSelector=";
      for (size_t start = 0; start < query.size();) {
        size_t end = query.find('&', start);
        if (end == std::string::npos) end = query.size();
        const std::string kv = query.substr(start, end - start);
        if (kv.rfind(prefix, 0) == 0) selector = Unescape(kv.substr(prefix.size()));
        start = end + 1;
      }
      auto parsed = kube::LabelSelector::Parse(selector);
      if (!parsed.ok()) return Error(400, "BadRequest", parsed.status().message());
      json items = json::array();
      for (const auto& [k, obj] : objects_) {
        if (k.resource == resource && (ns.empty() || k.ns == ns) && parsed->MatchesObject(obj)) {
          items.push_back(obj);
        }
      }
      return Ok({{"items", items}, {"metadata", {{"resourceVersion", std::to_string(version_)}}}});
    }
    auto it = objects_.find(key);
    if (request.method == "GET") {
      if (it == objects_.end()) return Error(404, "NotFound", name + " not found");
      return Ok(it->second);
    }
    if (request.method == "POST") {
      const std::string new_name = body["metadata"].value("name", "");
      const Key new_key = Key(resource, ns, new_name);
      if (objects_.count(new_key) > 0) {
        return Error(409, "AlreadyExists", new_name + " already exists");
      }
      if (!ns.empty()) body["metadata"]["namespace"] = ns;
      body["metadata"]["uid"] = "uid-" + resource + "-" + new_name;
      body["metadata"]["resourceVersion"] = std::to_string(++version_);
      objects_[new_key] = body;
      return Ok(body, 201);
    }
    if (it == objects_.end()) return Error(404, "NotFound", name + " not found");
    json& stored = it->second;
    if (request.method == "PUT") {
      if (body["metadata"].value("resourceVersion", "") !=
          stored["metadata"].value("resourceVersion", "")) {
        return Error(409, "Conflict", "the object has been modified");
      }
      if (sub == "status") {
        stored["status"] = body.value("status", json::object());
      } else {
        json status = stored.value("status", json());
        stored = body;
        if (!status.is_null()) stored["status"] = status;
      }
      return Written(key);
    }
    if (request.method == "PATCH") {
      const std::string want = body.is_object() && body.contains("metadata")
                                   ? body["metadata"].value("resourceVersion", "")
                                   : "";
      if (!want.empty() && want != stored["metadata"].value("resourceVersion", "")) {
        return Error(409, "Conflict", "the object has been modified");
      }
      stored.merge_patch(body);
      return Written(key);
    }
    if (request.method == "DELETE") {
      delete_grace_[resource + "/" + name] =
          body.is_object() ? body.value("gracePeriodSeconds", int64_t{-1}) : -1;
      if (!stored["metadata"].value("finalizers", json::array()).empty()) {
        stored["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
        return Written(key);
      }
      json gone = stored;
      objects_.erase(it);
      return Ok(gone);
    }
    return Error(405, "MethodNotAllowed", request.method);
  }

  Status Stream(const kube::HttpRequest&, const std::function<void(const kube::HttpResponse&)>&,
                const std::function<bool(std::string_view)>&, const std::atomic<bool>*) override {
    return Status::FailedPrecondition("FakeApiServer does not watch");
  }

 private:
  struct Key {
    std::string resource, ns, name;
    Key(std::string r, std::string n, std::string m)
        : resource(std::move(r)), ns(std::move(n)), name(std::move(m)) {}
    bool operator<(const Key& o) const {
      return std::tie(resource, ns, name) < std::tie(o.resource, o.ns, o.name);
    }
  };

  static std::string Unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        out.push_back(s[i] == '+' ? ' ' : s[i]);
      }
    }
    return out;
  }
  static kube::HttpResponse Ok(const json& body, int status = 200) {
    return {status, {{"content-type", "application/json"}}, body.dump()};
  }
  static kube::HttpResponse Error(int status, const std::string& reason,
                                  const std::string& message) {
    json body = {{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"},
                 {"reason", reason}, {"message", message}, {"code", status}};
    return {status, {{"content-type", "application/json"}}, body.dump()};
  }
  // Caller holds mu_.
  kube::HttpResponse Written(const Key& key) {
    json& stored = objects_.at(key);
    stored["metadata"]["resourceVersion"] = std::to_string(++version_);
    return Ok(stored);
  }

  std::mutex mu_;
  std::map<Key, json> objects_;
  int64_t version_ = 0;
  ProxyHandler proxy_;
  std::vector<std::string> requests_;
  std::map<std::string, int64_t> delete_grace_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_FAKE_API_SERVER_H_
