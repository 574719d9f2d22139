// Integration tests of the local multi-cluster control plane (scripts/localcluster.py),
// run against the real clusters the CTest fixture starts: 2 clusters of 4 fake
// 8-GPU nodes. The real kube-scheduler binds pods; kwok runs them.
#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/local_clusters.h"

namespace kiln::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

// Bound on how long a condition may take before the test gives up. Not a
// performance assertion: it only keeps a broken cluster from hanging CI.
constexpr auto kWaitLimit = seconds(120);

LocalClusters Fixture() {
  auto clusters = LocalClusters::FromEnvironment();
  if (!clusters.ok()) FAIL(clusters.status().ToString());
  return *clusters;
}

json KubectlJson(const LocalClusters& lc, const LocalCluster& c, std::vector<std::string> args) {
  args.insert(args.end(), {"-o", "json"});
  auto r = lc.Kubectl(c, args);
  REQUIRE(r.ok());
  INFO("kubectl stderr: " << r->stderr_data);
  REQUIRE(r->exit_code == 0);
  return json::parse(r->stdout_data);
}

void KubectlOk(const LocalClusters& lc, const LocalCluster& c, std::vector<std::string> args,
               std::string stdin_data = "") {
  auto r = lc.Kubectl(c, std::move(args), std::move(stdin_data));
  REQUIRE(r.ok());
  INFO("kubectl stderr: " << r->stderr_data);
  REQUIRE(r->exit_code == 0);
}

// Polls `check` until it returns true; fails the test with `what` and the last
// state `check` recorded in `seen` after kWaitLimit.
void WaitUntil(const std::string& what, const std::function<bool(std::string& seen)>& check) {
  auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
  std::string seen;
  while (!check(seen)) {
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("gave up waiting for " << what << "; last seen: " << seen);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

std::string GpuPod(const std::string& name, int gpus) {
  return json{{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}}},
              {"spec",
               {{"containers",
                 {{{"name", "worker"},
                   {"image", "kiln/worker:test"},
                   {"resources", {{"limits", {{"nvidia.com/gpu", std::to_string(gpus)}}}}}}}}}}}
      .dump();
}

// A fresh namespace, deleted when the test case ends.
class TestNamespace {
 public:
  TestNamespace(const LocalClusters& lc, const LocalCluster& c)
      : lc_(lc), c_(c), name_(UniqueName("kiln-it")) {
    KubectlOk(lc_, c_, {"create", "namespace", name_});
  }
  TestNamespace(const TestNamespace&) = delete;
  TestNamespace& operator=(const TestNamespace&) = delete;
  ~TestNamespace() { (void)lc_.Kubectl(c_, {"delete", "namespace", name_, "--wait=false"}); }
  const std::string& name() const { return name_; }

 private:
  const LocalClusters& lc_;
  const LocalCluster& c_;
  std::string name_;
};

const json* FindCondition(const json& obj, const std::string& type) {
  auto status = obj.find("status");
  if (status == obj.end() || !status->contains("conditions")) return nullptr;
  for (const auto& c : status->at("conditions")) {
    if (c.at("type") == type) return &c;
  }
  return nullptr;
}

TEST_CASE("two independent clusters, each with four ready 8-GPU nodes", "[integration]") {
  auto lc = Fixture();
  REQUIRE(lc.clusters().size() == 2);
  REQUIRE(lc.nodes_per_cluster() == 4);
  REQUIRE(lc.gpus_per_node() == 8);
  CHECK(lc.clusters()[0].server != lc.clusters()[1].server);

  for (const auto& c : lc.clusters()) {
    INFO("cluster " << c.name);
    json nodes = KubectlJson(lc, c, {"get", "nodes"});
    REQUIRE(nodes["items"].size() == 4);
    std::set<std::string> domains;
    for (const auto& n : nodes["items"]) {
      const auto& labels = n["metadata"]["labels"];
      CHECK(n["status"]["capacity"]["nvidia.com/gpu"] == "8");
      CHECK(n["status"]["allocatable"]["nvidia.com/gpu"] == "8");
      const json* ready = FindCondition(n, "Ready");
      REQUIRE(ready != nullptr);
      CHECK((*ready)["status"] == "True");
      CHECK(labels.contains("topology.kubernetes.io/zone"));
      CHECK(labels.contains("kiln.dev/rack"));
      CHECK(labels["kiln.dev/cluster"] == c.name);
      CHECK(labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3");
      domains.insert(labels.at("kiln.dev/nvlink-domain").get<std::string>());
    }
    CHECK(domains.size() == 2);  // Two nodes per NVLink domain by default.
  }

  // Independence: an object created in one cluster does not exist in the other.
  const auto& a = lc.clusters()[0];
  const auto& b = lc.clusters()[1];
  TestNamespace ns(lc, a);
  auto other = lc.Kubectl(b, {"get", "namespace", ns.name()});
  REQUIRE(other.ok());
  CHECK(other->exit_code != 0);
  CHECK(other->stderr_data.find("NotFound") != std::string::npos);
}

TEST_CASE("an 8-GPU pod is bound by the scheduler and reaches Running", "[integration]") {
  auto lc = Fixture();
  const auto& c = lc.clusters()[0];
  TestNamespace ns(lc, c);
  KubectlOk(lc, c, {"apply", "-n", ns.name(), "-f", "-"}, GpuPod("gpu8", 8));

  json pod;
  WaitUntil("pod gpu8 to be Running", [&](std::string& seen) {
    pod = KubectlJson(lc, c, {"get", "pod", "gpu8", "-n", ns.name()});
    seen = pod["status"].dump();
    return pod["status"].value("phase", "") == "Running";
  });
  const json* scheduled = FindCondition(pod, "PodScheduled");
  REQUIRE(scheduled != nullptr);
  CHECK((*scheduled)["status"] == "True");
  std::string node = pod["spec"].value("nodeName", "");
  CHECK(node.rfind(c.name + "-gpu-", 0) == 0);

  // The binding came from the real default scheduler.
  json events = KubectlJson(lc, c,
                            {"get", "events", "-n", ns.name(), "--field-selector",
                             "involvedObject.name=gpu8,reason=Scheduled"});
  REQUIRE_FALSE(events["items"].empty());
  const json& scheduled_event = events["items"][0];
  std::string reporter = scheduled_event.value("reportingComponent", "");
  if (reporter.empty()) reporter = scheduled_event["source"].value("component", "");
  CHECK(reporter == "default-scheduler");
  CHECK_THAT(scheduled_event["message"].get<std::string>(), Catch::Contains(node));
}

TEST_CASE("a 9-GPU pod stays Pending with the scheduler's reason", "[integration]") {
  auto lc = Fixture();
  const auto& c = lc.clusters()[0];
  TestNamespace ns(lc, c);
  KubectlOk(lc, c, {"apply", "-n", ns.name(), "-f", "-"}, GpuPod("gpu9", 9));

  json pod;
  WaitUntil("the scheduler to mark gpu9 Unschedulable", [&](std::string& seen) {
    pod = KubectlJson(lc, c, {"get", "pod", "gpu9", "-n", ns.name()});
    seen = pod["status"].dump();
    const json* s = FindCondition(pod, "PodScheduled");
    return s != nullptr && (*s)["status"] == "False";
  });
  const json* scheduled = FindCondition(pod, "PodScheduled");
  CHECK((*scheduled)["reason"] == "Unschedulable");
  CHECK_THAT((*scheduled)["message"].get<std::string>(),
             Catch::Contains("4 Insufficient nvidia.com/gpu"));
  CHECK(pod["status"]["phase"] == "Pending");
  CHECK(pod["spec"].value("nodeName", "").empty());

  // Still Pending a little later: nothing ever binds it.
  std::this_thread::sleep_for(seconds(2));
  pod = KubectlJson(lc, c, {"get", "pod", "gpu9", "-n", ns.name()});
  CHECK(pod["status"]["phase"] == "Pending");
  CHECK(pod["spec"].value("nodeName", "").empty());
}

TEST_CASE("GPU capacity is accounted exactly: four 8-GPU pods fit, a fifth waits",
          "[integration]") {
  auto lc = Fixture();
  const auto& c = lc.clusters()[1];  // The other tests use cluster 0; this one fills its cluster.
  TestNamespace ns(lc, c);
  for (int i = 0; i < 5; ++i) {
    KubectlOk(lc, c, {"apply", "-n", ns.name(), "-f", "-"}, GpuPod("fill-" + std::to_string(i), 8));
  }
  json pods;
  WaitUntil("four pods Running and one Unschedulable", [&](std::string& seen) {
    pods = KubectlJson(lc, c, {"get", "pods", "-n", ns.name()});
    int running = 0, unschedulable = 0;
    for (const auto& p : pods["items"]) {
      running += p["status"].value("phase", "") == "Running";
      const json* s = FindCondition(p, "PodScheduled");
      unschedulable += s != nullptr && (*s)["status"] == "False";
    }
    seen = std::to_string(running) + " running, " + std::to_string(unschedulable) +
           " unschedulable of " + std::to_string(pods["items"].size());
    return running == 4 && unschedulable == 1;
  });
  std::set<std::string> nodes;
  for (const auto& p : pods["items"]) {
    if (p["status"].value("phase", "") == "Running") nodes.insert(p["spec"]["nodeName"]);
  }
  CHECK(nodes.size() == 4);  // One 8-GPU pod per node.
}

TEST_CASE("starting clusters again in a running directory is refused", "[integration]") {
  auto lc = Fixture();
  auto r = RunProcess({.argv = {"python3", KILN_SOURCE_DIR "/scripts/localcluster.py", "up",
                                "--dir", lc.run_dir(), "--bin-dir", lc.bin_dir()}});
  REQUIRE(r.ok());
  CHECK(r->exit_code == 1);
  CHECK_THAT(r->stderr_data, Catch::Contains("already running"));
  CHECK_THAT(r->stderr_data, Catch::Contains("localcluster.py down --dir"));
}

}  // namespace
}  // namespace kiln::testing
