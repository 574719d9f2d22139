// The ModelDeployment controller against the shared local control plane's
// last cluster: real Deployments, ReplicaSets and EndpointSlices (the
// cluster's kube-controller-manager), pods on kwok's fake nodes, whose
// readiness kwok fakes (no kiln-worker runs, so /readyz is never asked).
// The router's window comes over HTTP from a stand-in on 127.0.0.1 that
// serves /debug/summary as kiln-router does, with the numbers the test sets.
// A first version comes up and takes all traffic; a new one rolls out by its
// steps (a weight, an analysis) to Healthy; rollout.action Rollback returns
// to the warm previous version; a canary whose error rate is too high is
// rolled back by the analysis. Prints the measured times. With
// traffic.provider GatewayAPI, the weights go into a real HTTPRoute, which the
// pinned Gateway API CRDs (scripts/build-tools.sh gateway-api) validate.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/http_server.h"
#include "kube/api_error.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/modeldeployment/gateway_route.h"
#include "operator/controllers/modeldeployment/metrics_source.h"
#include "operator/controllers/modeldeployment/reconciler.h"
#include "operator/controllers/modeldeployment/version_workload.h"
#include "runtime/manager.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/local_clusters.h"
#include "tests/support/temp_dir.h"

namespace kiln::modeldeployment {
namespace {

using kube::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Polls `probe` (bounded) until it returns true; the time it took.
template <typename F>
Clock::duration WaitUntil(const std::string& what, F probe,
                          std::chrono::seconds limit = std::chrono::seconds(90)) {
  const auto start = Clock::now();
  while (Clock::now() - start < limit) {
    if (probe()) return Clock::now() - start;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("timed out waiting for " << what);
  return limit;
}

// kiln-router's /debug/summary for route `route`: each version's error rate.
std::string Summary(const std::string& route, const std::map<std::string, double>& error_rates) {
  json versions = json::array();
  for (const auto& [version, rate] : error_rates) {
    versions.push_back({{"route", route},
                        {"version", version},
                        {"requests", 200},
                        {"errors", static_cast<int>(rate * 200)},
                        {"errorRate", rate},
                        {"latencyP50", 0.05},
                        {"latencyP99", 0.2},
                        {"timeToFirstTokenP50", 0.01},
                        {"timeToFirstToken", 0.03}});
  }
  return json{{"windowSeconds", 1}, {"versions", versions}}.dump();
}

// The controller on the last cluster, in a namespace of its own, reading the
// router's window from a loopback stand-in whose answer `SetSummary` sets.
class Setup {
 public:
  // `in_process`: the controller runs in this process (a manager of its
  // own); otherwise the test runs kiln-operator, for which every kiln CRD is
  // applied.
  explicit Setup(bool in_process = true) {
    auto lc = testing::LocalClusters::FromEnvironment();
    REQUIRE(lc.ok());
    lc_ = std::make_unique<testing::LocalClusters>(std::move(*lc));
    const testing::LocalCluster& cluster = lc_->clusters().back();
    // The operator's client has the default rate limit; the test's own
    // (polling every 20 ms) has none and is apart, so it does not slow the
    // controller down.
    auto made = lc_->Client(cluster);
    REQUIRE(made.ok());
    operator_client_ = std::move(*made);
    auto unlimited = kube::Client::New(operator_client_->config(), {.qps = 0});
    REQUIRE(unlimited.ok());
    client_ = std::move(*unlimited);
    kubeconfig = cluster.kubeconfig;
    std::vector<std::string> crds = {"modeldeployments"};
    if (!in_process) crds = {"modeldeployments", "memberclusters", "trainingjobs"};
    for (const std::string& crd : crds) {
      const Status applied =
          lc_->ApplyCrd(cluster, std::string(KILN_SOURCE_DIR) + "/crds/kiln.dev_" + crd + ".yaml",
                        crd + ".kiln.dev");
      INFO(applied.ToString());
      REQUIRE(applied.ok());
    }
    ns = testing::UniqueName("kiln-md");
    REQUIRE(client().Create(kube::resources::kNamespaces, "", {{"metadata", {{"name", ns}}}}).ok());
    route = ns + "/" + name;
    summary_ = Summary(route, {{"v1", 0}});

    const int port = testing::FreePort();
    auto router = HttpServer::Start(
        {.bind_address = "127.0.0.1:" + std::to_string(port)},
        {HttpRoute::Get("/debug/summary", [this](const HttpRequest& r) {
          // As kiln-router: the window is a duration ("1s").
          auto w = r.query.find("window");
          if (w == r.query.end() || w->second.empty() || w->second.back() != 's') {
            return HttpReply{.status = 400, .body = "bad window"};
          }
          std::lock_guard<std::mutex> lock(mu_);
          return HttpReply{.content_type = "application/json", .body = summary_};
        })});
    REQUIRE(router.ok());
    router_ = std::move(*router);
    router_url = "http://127.0.0.1:" + std::to_string(port);
    if (!in_process) return;
    auto source = RouterMetricsSource::New(router_url);
    REQUIRE(source.ok());
    source_ = std::move(*source);

    kube::Client& op = *operator_client_;
    manager_ = std::make_unique<runtime::Manager>(
        op, runtime::ManagerOptions{.metrics_bind_address = "0", .health_probe_bind_address = "0"});
    auto mds = manager_->GetInformer(op, api::v1alpha1::kModelDeployments, {.ns = ns});
    REQUIRE(mds.ok());
    auto deployments =
        manager_->GetInformer(op, kube::resources::kDeployments,
                              {.ns = ns, .label_selector = api::kModelDeploymentLabel});
    REQUIRE(deployments.ok());
    reconciler_ = std::make_unique<ModelDeploymentReconciler>(
        op, &manager_->events(),
        ModelDeploymentReconcilerOptions{.metrics_source = source_.get(),
                                         .resync = std::chrono::milliseconds(500),
                                         .scale_down_grace = std::chrono::seconds(1)});
    runtime::Controller& controller = manager_->AddController("modeldeployment", *reconciler_);
    controller.For(**mds);
    controller.Owns(**deployments, api::v1alpha1::kModelDeployments);
    run_ = std::async(std::launch::async, [this] { return manager_->Run(stop_); });
  }
  ~Setup() {
    stop_ = true;
    if (run_.valid()) CHECK(run_.get().ok());
    if (router_) router_->Drain(std::chrono::seconds(1));
    // Best effort: the control plane is torn down after the run anyway.
    Status deleted = client().Delete(kube::resources::kNamespaces, "", ns).status();
    CHECK((deleted.ok() || kube::IsNotFound(deleted)));
  }

  kube::Client& client() { return *client_; }
  void SetSummary(const std::map<std::string, double>& error_rates) {
    std::lock_guard<std::mutex> lock(mu_);
    summary_ = Summary(route, error_rates);
  }
  json MdStatus() {
    auto md = client().Get(api::v1alpha1::kModelDeployments, ns, name);
    return md.ok() ? md->value("status", json::object()) : json::object();
  }
  static int Weight(const json& s, const std::string& version) {
    for (const auto& t : s.value("traffic", json::array())) {
      if (t.value("version", "") == version) return t.value("weight", 0);
    }
    return 0;
  }
  void PatchSpec(const json& spec) {
    REQUIRE(client()
                .Patch(api::v1alpha1::kModelDeployments, ns, name, kube::PatchType::kMerge,
                       json{{"spec", spec}}.dump())
                .ok());
  }
  static json Model(const std::string& version) {
    return json{{"name", "chat"}, {"version", version}, {"uri", "file:///models/" + version}};
  }
  // Creates ModelDeployment `md_name` (default: `name`) with `steps` and,
  // when given, spec.traffic `traffic`.
  void Create(const json& steps, const json& traffic = nullptr, const std::string& md_name = "") {
    json spec = {
        {"model", Model("v1")},
        {"replicas", 2},
        {"image", "kiln.dev/kiln-worker:test"},
        {"gpusPerReplica", 0},
        {"strategy", {{"canary", {{"steps", steps}, {"scaleDownDelay", "1m"}}}}},
        {"analysis",
         {{"interval", "1s"},
          {"failureLimit", 0},
          {"metrics",
           json::array(
               {{{"name", "errors"}, {"router", {{"metric", "errorRate"}}}, {"max", 0.05}}})}}}};
    if (!traffic.is_null()) spec["traffic"] = traffic;
    REQUIRE(
        client()
            .Create(api::v1alpha1::kModelDeployments, ns,
                    {{"apiVersion", "kiln.dev/v1alpha1"},
                     {"kind", "ModelDeployment"},
                     {"metadata", {{"name", md_name.empty() ? name : md_name}, {"namespace", ns}}},
                     {"spec", spec}})
            .ok());
  }
  // Applies the pinned Gateway API release's GatewayClass, Gateway and
  // HTTPRoute CRDs (standard channel) and waits until they are served.
  void ApplyGatewayApiCrds() {
    const std::string dir =
        lc_->bin_dir() + "/../gateway-api/" + std::string(KILN_GATEWAY_API_VERSION);
    const testing::LocalCluster& cluster = lc_->clusters().back();
    for (const char* crd : {"gatewayclasses", "gateways", "httproutes"}) {
      const std::string file = dir + "/gateway.networking.k8s.io_" + crd + ".yaml";
      INFO(
          "the Gateway API CRDs are fetched by scripts/build-tools.sh gateway-api (setup.sh runs "
          "it); missing: "
          << file);
      REQUIRE(std::ifstream(file).good());
      const Status applied =
          lc_->ApplyCrd(cluster, file, std::string(crd) + ".gateway.networking.k8s.io");
      INFO(applied.ToString());
      REQUIRE(applied.ok());
    }
  }
  // The Warning Events about ModelDeployment `md_name` with `reason`: their messages.
  std::vector<std::string> Events(const std::string& md_name, const std::string& reason) {
    std::vector<std::string> messages;
    auto events = client().List(kube::resources::kEvents, ns);
    if (!events.ok()) return messages;
    for (const auto& e : (*events)["items"]) {
      if (e.value("reason", "") == reason &&
          e.value("involvedObject", json::object()).value("name", "") == md_name) {
        messages.push_back(e.value("message", ""));
      }
    }
    return messages;
  }
  bool DeploymentGone(const std::string& version) {
    return kube::IsNotFound(
        client().Get(kube::resources::kDeployments, ns, VersionObjectName(name, version)).status());
  }

  std::string ns;
  const std::string name = "chat";
  std::string kubeconfig;
  std::string router_url;  // The stand-in's.
  // A version with weight lacks a Deployment with a ready pod: "" or what.
  std::string WeightWithoutPods() {
    const json s = MdStatus();
    for (const auto& t : s.value("traffic", json::array())) {
      if (t.value("weight", 0) == 0) continue;
      const std::string version = t.value("version", "");
      auto d = client().Get(kube::resources::kDeployments, ns, VersionObjectName(name, version));
      if (!d.ok())
        return version + " has weight " + std::to_string(t.value("weight", 0)) +
               " and no Deployment (" + d.status().ToString() + ")";
      if (d->value("spec", json::object()).value("replicas", 0) == 0) {
        return version + " has weight and its Deployment is scaled to 0";
      }
    }
    return "";
  }
  std::string route;

 private:
  std::unique_ptr<testing::LocalClusters> lc_;
  std::unique_ptr<kube::Client> operator_client_;
  std::unique_ptr<kube::Client> client_;
  std::mutex mu_;
  std::string summary_;  // Guarded by mu_.
  std::unique_ptr<HttpServer> router_;
  std::unique_ptr<RouterMetricsSource> source_;
  std::unique_ptr<runtime::Manager> manager_;
  std::unique_ptr<ModelDeploymentReconciler> reconciler_;
  std::atomic<bool> stop_{false};
  std::future<Status> run_;
};

TEST_CASE("a ModelDeployment rolls out, rolls back from the spec and on a failed analysis",
          "[integration][modeldeployment]") {
  Setup t;
  // 1. The first version: traffic once a pod is ready.
  auto start = Clock::now();
  t.Create(json::array({{{"setWeight", 50}}, {{"analysis", {{"duration", "2s"}}}}}));
  WaitUntil("v1 takes all traffic", [&] {
    const json s = t.MdStatus();
    return s.value("phase", "") == "Healthy" && Setup::Weight(s, "v1") == 100;
  });
  std::printf("modeldeployment: first version serving %.2f s after the apply\n",
              Seconds(Clock::now() - start));
  // The router finds the version's endpoints: an EndpointSlice with the
  // Service's labels and a port named http.
  WaitUntil("v1's EndpointSlice", [&] {
    auto slices = t.client().List(
        kube::Resource{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true}, t.ns,
        {.label_selector = std::string(api::kModelDeploymentLabel) + "=" + t.name + "," +
                           api::kModelVersionLabel + "=v1"});
    if (!slices.ok() || (*slices)["items"].empty()) return false;
    const json& slice = (*slices)["items"][0];
    return slice.value("ports", json::array()).size() == 1 &&
           slice["ports"][0].value("name", "") == "http" &&
           slice.value("endpoints", json::array()).size() == 2;
  });

  // 2. A rollout by the steps, to Healthy; the canary's weight is seen.
  t.SetSummary({{"v1", 0}, {"v2", 0.01}});
  start = Clock::now();
  t.PatchSpec({{"model", Setup::Model("v2")}});
  int seen_canary_weight = 0;
  WaitUntil("v2 promoted", [&] {
    const json s = t.MdStatus();
    if (s.value("canaryVersion", "") == "v2") {
      seen_canary_weight = std::max(seen_canary_weight, Setup::Weight(s, "v2"));
    }
    return s.value("phase", "") == "Healthy" && s.value("stableVersion", "") == "v2" &&
           Setup::Weight(s, "v2") == 100;
  });
  std::printf("modeldeployment: 2-step rollout v1 → v2 (50%%, 2 s analysis) %.2f s end to end\n",
              Seconds(Clock::now() - start));
  CHECK(seen_canary_weight == 50);
  json s = t.MdStatus();
  INFO(s.dump());
  CHECK(s.value("previousVersion", "") == "v1");
  REQUIRE(s["analysisRuns"].size() == 1);
  CHECK(s["analysisRuns"][0]["phase"] == "Successful");
  CHECK(s["analysisRuns"][0]["measurements"].size() >= 2);
  CHECK_FALSE(t.DeploymentGone("v1"));

  // 3. rollout.action Rollback: back to the warm v1 at once.
  t.PatchSpec({{"rollout", {{"action", "Rollback"}}}});
  const auto rolled_back = WaitUntil("the rollback to v1", [&] {
    const json st = t.MdStatus();
    return st.value("stableVersion", "") == "v1" && Setup::Weight(st, "v1") == 100;
  });
  std::printf("modeldeployment: rollout.action Rollback → 100%% on v1 in the status %.3f s\n",
              Seconds(rolled_back));
  s = t.MdStatus();
  CHECK(s["phase"] == "RolledBack");
  CHECK(s["rollbacks"] == 1);
  WaitUntil("v2's Deployment to go", [&] { return t.DeploymentGone("v2"); });

  // 4. A canary that answers with errors: rolled back by the analysis.
  t.SetSummary({{"v1", 0}, {"v3", 0.4}});
  start = Clock::now();
  t.PatchSpec({{"model", Setup::Model("v3")}, {"rollout", {{"action", "Continue"}}}});
  WaitUntil("v3 rolled back by the analysis",
            [&] { return t.MdStatus().value("phase", "") == "Degraded"; });
  std::printf("modeldeployment: canary with 40%% errors rolled back %.2f s after the spec change\n",
              Seconds(Clock::now() - start));
  s = t.MdStatus();
  INFO(s.dump());
  CHECK(Setup::Weight(s, "v1") == 100);
  CHECK(Setup::Weight(s, "v3") == 0);
  CHECK(s["rollbacks"] == 2);
  CHECK(s["message"].get<std::string>().find("errors = 0.4 > max 0.05") != std::string::npos);
  WaitUntil("v3's Deployment to go", [&] { return t.DeploymentGone("v3"); });

  // 5. The same canary with failureLimit 2 (interval 1s): rolled back at the
  // third failed measurement, about two intervals after the first.
  t.SetSummary({{"v1", 0}, {"v4", 0.4}});
  start = Clock::now();
  t.PatchSpec(
      {{"model", Setup::Model("v4")},
       {"strategy",
        {{"canary",
          {{"steps", json::array({{{"setWeight", 50}}, {{"analysis", {{"duration", "20s"}}}}})}}}}},
       {"analysis", {{"failureLimit", 2}}}});
  // Still Degraded from v3 until v4's analysis fails: wait for v4's run.
  auto v4_run = [&](const json& st) {
    json found = json::object();
    for (const auto& r : st.value("analysisRuns", json::array())) {
      if (r.value("name", "").rfind("v4-", 0) == 0) found = r;
    }
    return found;
  };
  WaitUntil("v4 rolled back by the analysis", [&] {
    const json st = t.MdStatus();
    return v4_run(st).value("phase", "") == "Failed" && st.value("phase", "") == "Degraded";
  });
  const double detected = Seconds(Clock::now() - start);
  s = t.MdStatus();
  INFO(s.dump());
  CHECK(Setup::Weight(s, "v1") == 100);
  CHECK(Setup::Weight(s, "v4") == 0);
  CHECK(s["rollbacks"] == 3);
  const json run = v4_run(s);
  int failed = 0;
  for (const auto& m : run.value("measurements", json::array())) {
    failed += m.value("phase", "") == "Failed" ? 1 : 0;
  }
  CHECK(failed == 3);  // failureLimit + 1
  std::printf(
      "modeldeployment: canary with 40%% errors, interval 1s, failureLimit 2: rolled back "
      "%.2f s after the spec change, at its %d. failed measurement\n",
      detected, failed);
}

const kube::Resource kGatewayClasses{"gateway.networking.k8s.io", "v1", "gatewayclasses",
                                     "GatewayClass", false};
const kube::Resource kGateways{"gateway.networking.k8s.io", "v1", "gateways", "Gateway", true};
const kube::Resource kResourceQuotas{"", "v1", "resourcequotas", "ResourceQuota", true};

json HTTPRoute(const std::string& ns, const std::string& name, json rules) {
  return {{"apiVersion", "gateway.networking.k8s.io/v1"},
          {"kind", "HTTPRoute"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"parentRefs", json::array({{{"name", "edge"}}})},
            {"hostnames", json::array({"chat.example"})},
            {"rules", std::move(rules)}}}};
}

json ServiceRef(const std::string& name, int port, int weight) {
  return {{"name", name}, {"port", port}, {"weight", weight}};
}

// The backendRef weights of a route's rule, by Service name.
std::map<std::string, int> RuleWeights(const json& rule) {
  std::map<std::string, int> weights;
  for (const auto& ref : rule.value("backendRefs", json::array())) {
    weights[ref.value("name", "")] = ref.value("weight", 1);
  }
  return weights;
}

// traffic.provider GatewayAPI against the real API server, the pinned
// Gateway API CRDs' schema and CEL rules validating every write: the route's
// first rule (the deployment's) follows the rollout's steps 100/0 → 25/75 →
// 0/100 and a Rollback at once, never weighting a version without a ready
// pod (a ResourceQuota holds the canary's pods back for a while); its
// redirect rule, another backend's rule, hostnames, matches and filters stay
// as written. A missing route and one with no rule for the deployment are
// Warning Events. No gateway routes by the HTTPRoute: no data plane runs.
TEST_CASE("with traffic.provider GatewayAPI a real HTTPRoute's weights follow the rollout",
          "[integration][modeldeployment][gateway]") {
  Setup t;
  t.ApplyGatewayApiCrds();
  const std::string v1 = VersionObjectName(t.name, "v1"), v2 = VersionObjectName(t.name, "v2");

  // The CRDs' validation is in force: a negative weight (OpenAPI) and a
  // redirect with backends (CEL) are refused.
  json bad = HTTPRoute(t.ns, "bad",
                       json::array({{{"backendRefs", json::array({ServiceRef(v1, 8000, -1)})}}}));
  Status refused = t.client().Create(kHTTPRoutes, t.ns, bad).status();
  CHECK(kube::IsInvalid(refused));
  bad = HTTPRoute(
      t.ns, "bad",
      json::array({{{"filters", json::array({{{"type", "RequestRedirect"},
                                              {"requestRedirect", {{"scheme", "https"}}}}})},
                    {"backendRefs", json::array({ServiceRef(v1, 8000, 1)})}}}));
  refused = t.client().Create(kHTTPRoutes, t.ns, bad).status();
  CHECK(kube::IsInvalid(refused));
  CHECK_THAT(refused.message(),
             Catch::Contains("RequestRedirect filter must not be used together with backendRefs"));

  // A GatewayClass no controller claims, its Gateway, and the user's route.
  REQUIRE(t.client()
              .Create(kGatewayClasses, "",
                      {{"apiVersion", "gateway.networking.k8s.io/v1"},
                       {"kind", "GatewayClass"},
                       {"metadata", {{"name", t.ns}}},
                       {"spec", {{"controllerName", "kiln.dev/no-data-plane"}}}})
              .ok());
  REQUIRE(t.client()
              .Create(kGateways, t.ns,
                      {{"apiVersion", "gateway.networking.k8s.io/v1"},
                       {"kind", "Gateway"},
                       {"metadata", {{"name", "edge"}, {"namespace", t.ns}}},
                       {"spec",
                        {{"gatewayClassName", t.ns},
                         {"listeners",
                          json::array({{{"name", "http"}, {"protocol", "HTTP"}, {"port", 80}}})}}}})
              .ok());
  const json header = {
      {"type", "RequestHeaderModifier"},
      {"requestHeaderModifier", {{"set", {{{"name", "x-kiln"}, {"value", "1"}}}}}}};
  auto path = [](const std::string& prefix) {
    return json::array({{{"path", {{"type", "PathPrefix"}, {"value", prefix}}}}});
  };
  auto created = t.client().Create(
      kHTTPRoutes, t.ns,
      HTTPRoute(
          t.ns, "chat-route",
          json::array(
              {{{"matches", path("/v1")},
                {"filters", json::array({header})},
                {"backendRefs", json::array({ServiceRef(v1, 8000, 1), ServiceRef(v2, 8000, 0)})}},
               {{"matches", path("/old")},
                {"filters",
                 json::array({{{"type", "RequestRedirect"},
                               {"requestRedirect", {{"scheme", "https"}, {"statusCode", 301}}}}})}},
               {{"matches", path("/docs")},
                {"backendRefs", json::array({ServiceRef("docs", 80, 1)})}}})));
  REQUIRE(created.ok());
  const json user_spec = (*created)["spec"];  // As the API server defaulted it.
  auto route = [&] {
    auto r = t.client().Get(kHTTPRoutes, t.ns, "chat-route");
    return r.ok() ? *r : json::object();
  };
  // Everything but the first rule's backendRefs is still the user's.
  auto users_fields_kept = [&](const json& r) {
    json spec = r.value("spec", json::object());
    json want = user_spec;
    if (!spec.contains("rules") || spec["rules"].size() != want["rules"].size()) return false;
    spec["rules"][0].erase("backendRefs");
    want["rules"][0].erase("backendRefs");
    return spec == want;
  };

  // A watcher: every distinct v1/v2 split of the first rule in order, and any
  // weight the controller gave a version without a ready pod (the user's
  // route, as created, names v1 before its pods exist).
  const std::string users_version = (*created)["metadata"]["resourceVersion"];
  std::atomic<bool> watching{true};
  std::mutex mu;
  std::vector<std::pair<int, int>> splits;
  std::vector<std::string> violations;
  std::thread watcher([&] {
    while (watching) {
      const json r = route();
      if (r.contains("spec")) {
        std::map<std::string, int> w = RuleWeights(r["spec"]["rules"][0]);
        std::vector<std::string> unready;
        const bool users = r["metadata"].value("resourceVersion", "") == users_version;
        for (const auto& [service, weight] : w) {
          if (weight == 0 || users) continue;
          auto d = t.client().Get(kube::resources::kDeployments, t.ns, service);
          if (!d.ok() || d->value("status", json::object()).value("readyReplicas", 0) < 1) {
            unready.push_back(service + " has weight " + std::to_string(weight) +
                              " and no ready pod");
          }
        }
        std::lock_guard<std::mutex> lock(mu);
        const std::pair<int, int> split{w[v1], w[v2]};
        if (splits.empty() || splits.back() != split) splits.push_back(split);
        for (auto& u : unready) violations.push_back(std::move(u));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  // A failed REQUIRE or wait throws: the watcher must still be stopped.
  struct StopWatcher {
    std::atomic<bool>& watching;
    std::thread& watcher;
    ~StopWatcher() {
      watching = false;
      if (watcher.joinable()) watcher.join();
    }
  } stop_watcher{watching, watcher};
  auto route_split = [&] {
    const json r = route();
    if (!r.contains("spec")) return std::map<std::string, int>();
    return RuleWeights(r["spec"]["rules"][0]);
  };

  // 1. v1 takes all of the route.
  const json traffic = {{"provider", "GatewayAPI"}, {"gatewayAPI", {{"httpRoute", "chat-route"}}}};
  auto start = Clock::now();
  t.Create(json::array({{{"setWeight", 75}}, {{"pause", {{"duration", "2s"}}}}}), traffic);
  WaitUntil("v1 takes all of the route", [&] {
    return route_split() == std::map<std::string, int>{{v1, 100}};
  });
  std::printf("modeldeployment-gateway: v1 at 100%% in the HTTPRoute %.2f s after the apply\n",
              Seconds(Clock::now() - start));
  CHECK(users_fields_kept(route()));
  // Nothing changes, so nothing is written (the controller resyncs every 0.5 s).
  const std::string version = route()["metadata"]["resourceVersion"];
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(route()["metadata"]["resourceVersion"] == version);

  // 2. v2 rolls out while a quota keeps its pods from being made: no weight
  // moves to it, then the steps run once the quota goes.
  REQUIRE(
      t.client()
          .Create(kResourceQuotas, t.ns,
                  {{"metadata", {{"name", "no-more-pods"}}}, {"spec", {{"hard", {{"pods", "2"}}}}}})
          .ok());
  WaitUntil("the quota to count v1's pods", [&] {
    auto q = t.client().Get(kResourceQuotas, t.ns, "no-more-pods");
    return q.ok() &&
           q->value("status", json::object()).value("used", json::object()).value("pods", "") ==
               "2";
  });
  start = Clock::now();
  t.PatchSpec({{"model", Setup::Model("v2")}});
  WaitUntil("v2 to be the canary", [&] {
    return t.MdStatus().value("canaryVersion", "") == "v2" && !t.DeploymentGone("v2");
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  {
    const json s = t.MdStatus();
    INFO(s.dump());
    CHECK(Setup::Weight(s, "v2") == 0);
    const std::map<std::string, int> w = route_split();
    CHECK(w.count(v1) == 1);
    CHECK(w.at(v1) == 100);
    CHECK((w.count(v2) == 0 || w.at(v2) == 0));
  }
  REQUIRE(t.client().Delete(kResourceQuotas, t.ns, "no-more-pods").ok());
  WaitUntil("v2 promoted in the route", [&] {
    const json s = t.MdStatus();
    return s.value("phase", "") == "Healthy" && s.value("stableVersion", "") == "v2" &&
           route_split()[v2] == 100 && route_split()[v1] == 0;
  });
  std::printf(
      "modeldeployment-gateway: v1 → v2 (75%%, pause 2 s) in the HTTPRoute %.2f s after the "
      "spec change (about 2 s of it held back by the quota)\n",
      Seconds(Clock::now() - start));
  CHECK(users_fields_kept(route()));

  // 3. Rollback: the route gives v1 everything at once.
  t.PatchSpec({{"rollout", {{"action", "Rollback"}}}});
  const auto rolled_back = WaitUntil("the route back on v1", [&] {
    const std::map<std::string, int> w = route_split();
    return w.count(v1) == 1 && w.at(v1) == 100 && (w.count(v2) == 0 || w.at(v2) == 0);
  });
  std::printf(
      "modeldeployment-gateway: rollout.action Rollback → 100%% on v1 in the HTTPRoute "
      "%.3f s\n",
      Seconds(rolled_back));
  CHECK(rolled_back < std::chrono::seconds(5));
  CHECK(users_fields_kept(route()));
  WaitUntil("the watcher to see the rollback", [&] {
    std::lock_guard<std::mutex> lock(mu);
    return !splits.empty() && splits.back() == std::pair<int, int>{100, 0};
  });
  watching = false;
  watcher.join();
  {
    std::lock_guard<std::mutex> lock(mu);
    std::string seen;
    for (const auto& [a, b] : splits) seen += std::to_string(a) + "/" + std::to_string(b) + " ";
    INFO("v1/v2 splits seen in the route: " << seen);
    // The user's 1/0 first, unless the controller had written before the
    // watcher's first look.
    std::vector<std::pair<int, int>> got = splits;
    if (!got.empty() && got.front() == std::pair<int, int>{1, 0}) got.erase(got.begin());
    const std::vector<std::pair<int, int>> want = {{100, 0}, {25, 75}, {0, 100}, {100, 0}};
    CHECK(got == want);
    for (const auto& v : violations) UNSCOPED_INFO(v);
    CHECK(violations.empty());
  }

  // 4. A deployment whose route does not exist, and one whose route has no
  // rule for it: Warning Events saying so; the latter route is untouched.
  auto other = t.client().Create(
      kHTTPRoutes, t.ns,
      HTTPRoute(t.ns, "docs-route",
                json::array({{{"backendRefs", json::array({ServiceRef("docs", 80, 1)})}}})));
  REQUIRE(other.ok());
  t.Create(json::array(), {{"provider", "GatewayAPI"}, {"gatewayAPI", {{"httpRoute", "nowhere"}}}},
           "lost");
  t.Create(json::array(),
           {{"provider", "GatewayAPI"}, {"gatewayAPI", {{"httpRoute", "docs-route"}}}}, "unrouted");
  WaitUntil("the HTTPRouteMissing event",
            [&] { return !t.Events("lost", "HTTPRouteMissing").empty(); });
  CHECK_THAT(t.Events("lost", "HTTPRouteMissing")[0],
             Catch::Contains("traffic.gatewayAPI.httpRoute nowhere does not exist"));
  WaitUntil("the HTTPRouteNoBackends event",
            [&] { return !t.Events("unrouted", "HTTPRouteNoBackends").empty(); });
  CHECK_THAT(t.Events("unrouted", "HTTPRouteNoBackends")[0],
             Catch::Contains("HTTPRoute docs-route has no rule for this deployment") &&
                 Catch::Contains(VersionObjectName("unrouted", "v1")));
  auto docs = t.client().Get(kHTTPRoutes, t.ns, "docs-route");
  REQUIRE(docs.ok());
  CHECK((*docs)["metadata"]["resourceVersion"] == (*other)["metadata"]["resourceVersion"]);
  CHECK(t.client().Delete(kGatewayClasses, "", t.ns).ok());
}

// kiln-operator itself, SIGKILLed 20 times at random moments of a rollout
// and started again: the rollout ends as it would have (v2 stable and
// Healthy, v1 warm, one analysis run, no rollback), and no poll of the API
// every 10 ms ever sees weight on a version whose Deployment is gone or
// scaled to zero.
TEST_CASE("kiln-operator killed at 20 random points of a rollout resumes it from the API",
          "[integration][modeldeployment]") {
  Setup t(/*in_process=*/false);
  testing::TempDir dir;
  int started = 0;
  auto start_operator = [&] {
    return std::make_unique<testing::BackgroundProcess>(
        std::vector<std::string>{KILN_OPERATOR_BIN, "--kubeconfig", t.kubeconfig,
                                 "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
                                 "--router-url", t.router_url, "--member-secret-namespace", t.ns},
        dir.path() + "/operator-" + std::to_string(++started) + ".log");
  };
  auto op = start_operator();
  std::atomic<bool> watching{true};
  std::mutex mu;
  std::vector<std::string> violations;
  std::thread watcher([&] {
    while (watching) {
      std::string v = t.WeightWithoutPods();
      if (!v.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        violations.push_back(v);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  // A failed REQUIRE or wait throws: the watcher must still be stopped.
  struct StopWatcher {
    std::atomic<bool>& watching;
    std::thread& watcher;
    ~StopWatcher() {
      watching = false;
      if (watcher.joinable()) watcher.join();
    }
  } stop_watcher{watching, watcher};

  t.SetSummary({{"v1", 0}, {"v2", 0.0}});
  t.Create(json::array({{{"setWeight", 25}},
                        {{"pause", {{"duration", "3s"}}}},
                        {{"setWeight", 50}},
                        {{"analysis", {{"duration", "3s"}}}},
                        {{"setWeight", 75}}}));
  WaitUntil("v1 takes all traffic", [&] { return Setup::Weight(t.MdStatus(), "v1") == 100; });
  t.PatchSpec({{"model", Setup::Model("v2")}});
  std::mt19937 rng(16);
  std::set<std::string> seen_steps;
  int during = 0;  // Kills before the rollout ended.
  for (int kill = 0; kill < 20; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 300));
    const json s = t.MdStatus();
    seen_steps.insert(s.value("phase", "") + "@" + std::to_string(s.value("currentStep", -1)));
    if (s.value("stableVersion", "") != "v2") ++during;
    op->Signal(SIGKILL);
    op->Wait();
    op = start_operator();
  }
  const auto finished = WaitUntil("v2 promoted after the kills", [&] {
    const json s = t.MdStatus();
    return s.value("phase", "") == "Healthy" && s.value("stableVersion", "") == "v2" &&
           Setup::Weight(s, "v2") == 100;
  });
  watching = false;
  watcher.join();
  std::string states;
  for (const auto& step : seen_steps) states += step + " ";
  std::printf(
      "modeldeployment: 20 SIGKILLs, %d of them before the promotion (states seen at the "
      "kills: %s); Healthy %.2f s after the last restart\n",
      during, states.c_str(), Seconds(finished));
  const json s = t.MdStatus();
  INFO(s.dump());
  CHECK(s.value("previousVersion", "") == "v1");
  CHECK(s.value("rollbacks", 0) == 0);
  int analysis_runs = 0;
  for (const auto& r : s.value("analysisRuns", json::array())) {
    ++analysis_runs;
    CHECK(r.value("phase", "") == "Successful");
  }
  CHECK(analysis_runs == 1);
  std::lock_guard<std::mutex> lock(mu);
  CHECK(violations.empty());
  for (const auto& v : violations) UNSCOPED_INFO(v);
  op->Signal(SIGTERM);
  op->Wait();
}

// For docs/modeldeployment.md's figure: 20 promotions, each followed by
// rollout.action Rollback; the time from the spec write (answered) to the
// status giving the previous version 100%.
TEST_CASE("Rollback from the spec to the status, 20 times", "[.][modeldeployment-bench]") {
  Setup t;
  t.Create(json::array());
  WaitUntil("v1 takes all traffic", [&] { return Setup::Weight(t.MdStatus(), "v1") == 100; });
  std::vector<double> took;
  std::string stable = "v1";
  for (int i = 0; i < 20; ++i) {
    const std::string next = "r" + std::to_string(i);
    t.PatchSpec({{"model", Setup::Model(next)}, {"rollout", {{"action", "Continue"}}}});
    WaitUntil(next + " promoted", [&] {
      const json s = t.MdStatus();
      return s.value("stableVersion", "") == next && Setup::Weight(s, next) == 100;
    });
    t.PatchSpec({{"rollout", {{"action", "Rollback"}}}});
    took.push_back(Seconds(WaitUntil("the rollback to " + stable,
                                     [&] { return Setup::Weight(t.MdStatus(), stable) == 100; })));
  }
  std::sort(took.begin(), took.end());
  std::printf(
      "modeldeployment-bench: Rollback spec write → status 100%% on the previous version: "
      "p50 %.1f ms, p99 (max of 20) %.1f ms, min %.1f ms\n",
      took[took.size() / 2] * 1000, took.back() * 1000, took.front() * 1000);
}

}  // namespace
}  // namespace kiln::modeldeployment
