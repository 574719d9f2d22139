// What the member informers keep of a Node and a Pod (NodeAsWatched,
// PodAsWatched): everything the fleet's readers read gives the same answer
// on the cut-down object as on the whole one, and the bulk of a real object
// (images, volumes, env, annotations, status detail) is gone.
#include "operator/fleet/node_and_pod.h"

#include <catch2/catch.hpp>

#include "operator/fleet/quarantine.h"
#include "tests/operator/fleet/test_objects.h"

namespace kiln::fleet {
namespace {

using nlohmann::json;

// A node as a real kubelet reports it: many images, annotations, addresses.
json RealisticNode() {
  json node = testing::GpuNode("n1", "z-a", "r-0", "nvl-0");
  node["metadata"]["uid"] = "u-n1";
  node["metadata"]["resourceVersion"] = "42";
  node["metadata"]["annotations"] = {
      {"node.alpha.kubernetes.io/ttl", "0"},
      {"volumes.kubernetes.io/controller-managed-attach-detach", "true"},
      {"csi.volume.kubernetes.io/nodeid", R"({"ebs.csi.aws.com":"i-0123456789abcdef0"})"}};
  node["spec"]["taints"] = json::array(
      {{{"key", "kiln.dev/quarantined"}, {"value", "1700000000"}, {"effect", "NoSchedule"}}});
  node["spec"]["podCIDR"] = "10.0.1.0/24";
  node["status"]["conditions"] =
      json::array({{{"type", "MemoryPressure"}, {"status", "False"}, {"lastHeartbeatTime", "t"}},
                   {{"type", "Ready"},
                    {"status", "True"},
                    {"reason", "KubeletReady"},
                    {"lastHeartbeatTime", "2026-12-07T00:00:00Z"},
                    {"lastTransitionTime", "2026-12-01T00:00:00Z"}}});
  node["status"]["nodeInfo"] = {{"kubeletVersion", "v1.33.0"}, {"osImage", "Debian"}};
  node["status"]["addresses"] = json::array({{{"type", "InternalIP"}, {"address", "10.0.0.1"}}});
  json images = json::array();
  for (int i = 0; i < 40; ++i) {
    images.push_back(
        {{"names",
          {"registry.example/image-" + std::to_string(i) + "@sha256:" + std::string(64, 'a')}},
         {"sizeBytes", 123456789}});
  }
  node["status"]["images"] = images;
  return node;
}

// A worker pod as the API server returns it: volumes, env, tolerations,
// conditions, container statuses.
json RealisticPod() {
  json pod = testing::WorkerPod("team", "uid-1", 2, 3, "n1", 8);
  pod["metadata"]["uid"] = "u-p";
  pod["metadata"]["resourceVersion"] = "7";
  pod["metadata"]["annotations"] = {
      {"kubectl.kubernetes.io/last-applied-configuration", std::string(2000, 'x')}};
  pod["metadata"]["ownerReferences"] = json::array({{{"kind", "TrainingJob"}, {"name", "run"}}});
  pod["spec"]["schedulingGates"] = json::array({{{"name", "kiln.dev/gang"}}});
  pod["spec"]["containers"][0]["env"] = json::array();
  for (int i = 0; i < 20; ++i) {
    pod["spec"]["containers"][0]["env"].push_back(
        {{"name", "KILN_VAR_" + std::to_string(i)}, {"value", std::string(40, 'v')}});
  }
  pod["spec"]["containers"][0]["volumeMounts"] =
      json::array({{{"name", "kube-api-access"}, {"mountPath", "/var/run/secrets"}}});
  pod["spec"]["initContainers"] = json::array({{{"name", "prepare"},
                                                {"resources", {{"requests", {{"cpu", "4"}}}}},
                                                {"args", {"prepare"}}}});
  pod["spec"]["volumes"] = json::array(
      {{{"name", "kube-api-access"},
        {"projected",
         {{"sources", json::array({{{"serviceAccountToken", {{"path", "token"}}}},
                                   {{"configMap", {{"name", "kube-root-ca.crt"}}}}})}}}}});
  pod["spec"]["tolerations"] =
      json::array({{{"key", "node.kubernetes.io/not-ready"}, {"operator", "Exists"}}});
  pod["status"]["conditions"] = json::array({{{"type", "Ready"}, {"status", "True"}}});
  pod["status"]["containerStatuses"] =
      json::array({{{"name", "worker"}, {"ready", true}, {"image", "kiln-worker"}}});
  pod["status"]["podIP"] = "10.0.1.5";
  return pod;
}

TEST_CASE("a watched node answers the fleet's reads as the whole node does", "[fleet]") {
  const json whole = RealisticNode();
  const json kept = NodeAsWatched(whole);
  INFO(kept.dump());
  auto a = NodeInfoFromObject(whole);
  auto b = NodeInfoFromObject(kept);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*b == *a);
  CHECK(b->quarantined);
  CHECK(kept["metadata"]["resourceVersion"] == "42");  // The quarantine's patch names it.
  const auto now = std::chrono::system_clock::from_time_t(1'800'000'000);
  CHECK(TaintsWithoutEndedQuarantine(kept, now) == TaintsWithoutEndedQuarantine(whole, now));
  // The Ready condition's status and reason stay; the heartbeat does not
  // (nor does anything no reader looks at).
  CHECK(kept["status"]["conditions"][1]["reason"] == "KubeletReady");
  CHECK_FALSE(kept["status"]["conditions"][1].contains("lastHeartbeatTime"));
  for (const char* gone : {"images", "nodeInfo", "addresses"}) {
    CHECK_FALSE(kept["status"].contains(gone));
  }
  CHECK_FALSE(kept["metadata"].contains("annotations"));
  CHECK(kept.dump().size() * 5 < whole.dump().size());
}

TEST_CASE("a watched pod answers the fleet's reads as the whole pod does", "[fleet]") {
  const json whole = RealisticPod();
  const json kept = PodAsWatched(whole);
  INFO(kept.dump());
  auto a = PodRequests(whole);
  auto b = PodRequests(kept);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*b == *a);
  CHECK(b->cpu_millis == 4000);  // The init container's, the larger.
  CHECK(PodTerminated(kept) == PodTerminated(whole));
  auto wa = WorkerOfPod(whole);
  auto wb = WorkerOfPod(kept);
  REQUIRE(wb.has_value());
  CHECK(wb->holder == wa->holder);
  CHECK(wb->rank == wa->rank);
  CHECK(kept["metadata"]["namespace"] == "team");
  CHECK(kept["spec"]["nodeName"] == "n1");
  CHECK(kept["spec"]["schedulingGates"] == whole["spec"]["schedulingGates"]);
  for (const char* gone : {"volumes", "tolerations"}) CHECK_FALSE(kept["spec"].contains(gone));
  CHECK_FALSE(kept["spec"]["containers"][0].contains("env"));
  CHECK(kept["status"] == json{{"phase", "Running"}});
  CHECK(kept.dump().size() * 5 < whole.dump().size());
}

TEST_CASE("watching an object with missing parts keeps what there is", "[fleet]") {
  CHECK(NodeAsWatched(json::object()) == json{{"metadata", json::object()}});
  CHECK(PodAsWatched({{"metadata", {{"name", "p"}}}, {"spec", "odd"}}) ==
        json{{"metadata", {{"name", "p"}}}});
}

}  // namespace
}  // namespace kiln::fleet
