// The informer's transform, against a fake cluster (a list, then a watch
// event): what the cache holds and the handlers see is the transformed
// object, from the first list on; a transform set after Start is refused.
// (The informer's list-and-watch under churn, restarts and compaction is
// tests/integration/informer_test.cc's.)
#include "kube/informer.h"

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/runtime/fake_cluster.h"

namespace kiln::kube {
namespace {

using runtime::testing::FakeCluster;

json Pod(const std::string& name, const std::string& rv) {
  return {{"metadata", {{"name", name}, {"namespace", "a"}, {"resourceVersion", rv}}},
          {"spec", {{"nodeName", "n1"}, {"volumes", json::array({{{"name", "big"}}})}}}};
}

TEST_CASE("an informer's transform shapes what its cache holds and its handlers see",
          "[kube][informer]") {
  FakeCluster cluster;
  cluster.ListReturns({Pod("p1", "1")});
  Informer informer(*cluster.client, resources::kPods);
  REQUIRE(informer
              .SetTransform([](json pod) {
                pod["spec"].erase("volumes");
                pod["metadata"]["labels"]["seen"] = "yes";
                return pod;
              })
              .ok());
  std::mutex mu;
  std::vector<json> handled;
  informer.AddHandlers({.on_add =
                            [&](const Object& o) {
                              std::lock_guard<std::mutex> lock(mu);
                              handled.push_back(*o);
                            },
                        .on_update =
                            [&](const Object&, const Object& now) {
                              std::lock_guard<std::mutex> lock(mu);
                              handled.push_back(*now);
                            }});
  cluster.WatchSends({{"MODIFIED", Pod("p1", "2")}});
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::seconds(30)));
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (handled.size() == 2) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(handled.size() == 2);  // The list's add, the watch's update.
    for (const json& o : handled) {
      CHECK_FALSE(o["spec"].contains("volumes"));
      CHECK(o["metadata"]["labels"]["seen"] == "yes");
    }
  }
  const Object cached = informer.store().Get("a/p1");
  REQUIRE(cached != nullptr);
  CHECK((*cached)["metadata"]["resourceVersion"] == "2");
  CHECK_FALSE((*cached)["spec"].contains("volumes"));
  CHECK((*cached)["spec"]["nodeName"] == "n1");

  const Status late = informer.SetTransform([](json o) { return o; });
  CHECK(late.code() == StatusCode::kFailedPrecondition);
  informer.Stop();
}

}  // namespace
}  // namespace kiln::kube
