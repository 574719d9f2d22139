#include "router/api_source.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "base/log.h"
#include "operator/api/codec.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/api/v1alpha1/resources.h"

namespace kiln::router {
namespace {

using nlohmann::json;

std::string Label(const json& obj, const char* key) {
  const json* labels = obj.contains("metadata") ? &obj["metadata"] : nullptr;
  if (labels == nullptr || !labels->contains("labels")) return "";
  const json& l = (*labels)["labels"];
  auto it = l.find(key);
  return it != l.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string Meta(const json& obj, const char* key) {
  if (!obj.contains("metadata")) return "";
  auto it = obj["metadata"].find(key);
  return it != obj["metadata"].end() && it->is_string() ? it->get<std::string>() : "";
}

// The slice's serving port: the one named "http", else its only one; 0 if
// neither.
int SlicePort(const json& slice) {
  auto ports = slice.find("ports");
  if (ports == slice.end() || !ports->is_array()) return 0;
  int only = 0, count = 0;
  for (const json& p : *ports) {
    if (!p.contains("port") || !p["port"].is_number_integer()) continue;
    ++count;
    only = p["port"].get<int>();
    if (p.value("name", "") == "http") return only;
  }
  return count == 1 ? only : 0;
}

// "namespace/deployment/version" → ready "host:port", sorted, unique.
std::map<std::string, std::set<std::string>> ReadyEndpoints(
    const std::vector<kube::Object>& slices) {
  std::map<std::string, std::set<std::string>> out;
  for (const kube::Object& obj : slices) {
    const json& s = *obj;
    std::string deployment = Label(s, api::kModelDeploymentLabel);
    std::string version = Label(s, api::kModelVersionLabel);
    int port = SlicePort(s);
    if (deployment.empty() || version.empty() || port == 0) continue;
    std::set<std::string>& into = out[Meta(s, "namespace") + "/" + deployment + "/" + version];
    auto endpoints = s.find("endpoints");
    if (endpoints == s.end() || !endpoints->is_array()) continue;
    for (const json& e : *endpoints) {
      // Per the EndpointSlice API, a missing ready condition means ready.
      auto conditions = e.find("conditions");
      if (conditions != e.end() && conditions->is_object()) {
        auto ready = conditions->find("ready");
        if (ready != conditions->end() && ready->is_boolean() && !ready->get<bool>()) continue;
      }
      auto addresses = e.find("addresses");
      if (addresses == e.end() || !addresses->is_array() || addresses->empty() ||
          !(*addresses)[0].is_string()) {
        continue;
      }
      std::string ip = (*addresses)[0].get<std::string>();
      into.insert((ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" +
                  std::to_string(port));
    }
  }
  return out;
}

}  // namespace

BuiltRoutes BuildRouteConfig(const std::vector<kube::Object>& deployments,
                             const std::vector<kube::Object>& endpoint_slices,
                             uint64_t generation) {
  BuiltRoutes built;
  built.config.generation = generation;
  std::map<std::string, std::set<std::string>> endpoints = ReadyEndpoints(endpoint_slices);

  std::vector<std::pair<std::string, const json*>> sorted;
  for (const kube::Object& obj : deployments) {
    sorted.emplace_back(Meta(*obj, "namespace") + "/" + Meta(*obj, "name"), obj.get());
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  for (const auto& [key, obj] : sorted) {
    StatusOr<api::v1alpha1::ModelDeployment> decoded =
        api::Decode<api::v1alpha1::ModelDeployment>(*obj);
    if (!decoded.ok()) {
      built.problems.push_back(key + ": " + decoded.status().message());
      continue;
    }
    const api::v1alpha1::ModelDeployment& md = *decoded;
    const std::optional<api::v1alpha1::TrafficRouting>& traffic = md.spec.traffic;
    if (traffic && traffic->provider.value_or("Router") != "Router") continue;

    Route route;
    route.name = key;
    route.models = {md.spec.model.name};
    if (traffic && traffic->router) {
      const api::v1alpha1::RouterRoute& r = *traffic->router;
      route.host = r.host.value_or("");
      route.path_prefix = r.path_prefix.value_or("");
      route.sticky_header = r.sticky_header.value_or("");
      route.sticky_cookie = r.sticky_cookie.value_or("");
      route.mirror_percent = r.mirror_percent.value_or(0);
    }
    if (md.status) {
      const api::v1alpha1::ModelDeploymentStatus& st = *md.status;
      std::map<std::string, int> weights;
      for (const api::v1alpha1::TrafficWeight& w :
           st.traffic.value_or(std::vector<api::v1alpha1::TrafficWeight>{})) {
        weights[w.version] += w.weight;
      }
      std::set<std::string> named;
      auto add = [&](const std::optional<std::string>& version, const char* role) {
        if (!version || version->empty() || named.count(*version) > 0) return;
        named.insert(*version);
        VersionRoute v;
        v.name = *version;
        v.role = role;
        v.weight = weights.count(*version) > 0 ? weights[*version] : 0;
        const std::set<std::string>& ready = endpoints[key + "/" + *version];
        v.endpoints.assign(ready.begin(), ready.end());
        route.versions.push_back(std::move(v));
      };
      add(st.stable_version, "stable");
      add(st.canary_version, "canary");
      add(st.previous_version, "previous");
      for (const auto& [version, weight] : weights) {
        if (named.count(version) == 0 && weight > 0) {
          built.problems.push_back(key + ": status.traffic gives " + std::to_string(weight) +
                                   "% to " + version +
                                   ", which is neither the stable, canary nor previous version; "
                                   "that share is not routed");
        }
      }
      if (st.canary_version && !st.canary_version->empty() && route.mirror_percent > 0) {
        route.mirror_version = *st.canary_version;
      } else {
        route.mirror_percent = 0;
      }
    } else {
      route.mirror_percent = 0;
    }
    if (route.versions.empty()) route.mirror_percent = 0;

    built.config.routes.push_back(std::move(route));
    Status valid = Validate(built.config);
    if (!valid.ok()) {
      built.config.routes.pop_back();
      built.problems.push_back(key + ": left out: " + valid.message());
    }
  }
  return built;
}

ApiSource::ApiSource(kube::Client& client, ApiSourceOptions options, ApplyFunc apply)
    : ApiSource(client, client, std::move(options), std::move(apply)) {}

ApiSource::ApiSource(kube::Client& deployments_client, kube::Client& slices_client,
                     ApiSourceOptions options, ApplyFunc apply)
    : deployments_(deployments_client, api::v1alpha1::kModelDeployments,
                   kube::InformerOptions{.ns = options.ns, .resync = options.resync}),
      slices_(slices_client, kube::resources::kEndpointSlices,
              kube::InformerOptions{.ns = options.ns,
                                    .label_selector = api::kModelDeploymentLabel,
                                    .resync = options.resync}),
      apply_(std::move(apply)) {
  kube::EventHandlers handlers{
      .on_add = [this](const kube::Object&) { Rebuild(); },
      .on_update =
          [this](const kube::Object& old, const kube::Object& now) {
            if (old != now) Rebuild();
          },
      .on_delete = [this](const kube::Object&) { Rebuild(); },
  };
  deployments_.AddHandlers(handlers);
  slices_.AddHandlers(handlers);
}

ApiSource::~ApiSource() { Stop(); }

void ApiSource::Start() {
  deployments_.Start();
  slices_.Start();
}

void ApiSource::Stop() {
  deployments_.Stop();
  slices_.Stop();
}

bool ApiSource::synced() const {
  std::lock_guard<std::mutex> lock(mu_);
  return synced_;
}

bool ApiSource::WaitForSync(std::chrono::milliseconds timeout) {
  // Both informers may sync with nothing to deliver: build once they have.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  if (!deployments_.WaitForSync(timeout)) return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0 || !slices_.WaitForSync(left)) return false;
  Rebuild();
  std::unique_lock<std::mutex> lock(mu_);
  return synced_cv_.wait_until(lock, deadline, [this] { return synced_; });
}

ApiSourceStats ApiSource::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

Status ApiSource::last_error() const {
  Status s = deployments_.last_error();
  if (!s.ok()) {
    // Two clusters: say which one failed.
    if (&deployments_.client() != &slices_.client()) {
      return s.WithContext("hub cluster " + deployments_.client().config().server);
    }
    return s;
  }
  return slices_.last_error();
}

void ApiSource::Rebuild() {
  // An event during the first list of either informer would publish a
  // partial table: wait until both have listed.
  if (!deployments_.HasSynced() || !slices_.HasSynced()) return;
  std::unique_lock<std::mutex> lock(mu_);
  BuiltRoutes built =
      BuildRouteConfig(deployments_.store().List(), slices_.store().List(), stats_.generation + 1);
  stats_.generation = built.config.generation;
  stats_.routes = static_cast<int>(built.config.routes.size());
  stats_.problems = built.problems;
  std::string problems;
  for (const std::string& p : built.problems) problems += p + "\n";
  if (problems != last_problems_) {
    last_problems_ = problems;
    static const log::Logger logger("router.api");
    for (const std::string& p : built.problems) logger.Warn("route left out", {{"problem", p}});
  }
  // Applied under the lock: configs reach the router in generation order.
  apply_(std::move(built.config));
  synced_ = true;
  lock.unlock();
  synced_cv_.notify_all();
}

}  // namespace kiln::router
