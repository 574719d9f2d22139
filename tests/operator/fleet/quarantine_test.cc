// The quarantine taint: put on with its end as the value (never shortening a
// longer one), lifted once that end has passed, left alone when set by hand.
#include "operator/fleet/quarantine.h"

#include <catch2/catch.hpp>

#include "kube/api_error.h"
#include "tests/operator/fleet/test_objects.h"
#include "tests/support/fake_api_server.h"

namespace kiln::fleet {
namespace {

using nlohmann::json;
using std::chrono::system_clock;

TEST_CASE("a quarantine taint names its end, and comes off once that has passed",
          "[fleet][quarantine]") {
  kiln::testing::FakeApiServer api;
  kube::Client client(kube::RestConfig{.server = "https://fake"},
                      kube::ClientOptions{.qps = 0, .max_retries = 0}, api.Transport(),
                      RealClock::Get());
  json node = testing::GpuNode("n1", "z", "r", "nvl");
  node["spec"]["taints"] = {{{"key", "nvidia.com/gpu"}, {"effect", "NoSchedule"}}};
  api.Put("nodes", node);
  const auto t0 = system_clock::from_time_t(1'800'000'000);

  REQUIRE(QuarantineNode(client, "n1", t0 + std::chrono::hours(1)).ok());
  json taints = (*api.Object("nodes", "", "n1"))["spec"]["taints"];
  REQUIRE(taints.size() == 2);
  CHECK(taints[0]["key"] == "nvidia.com/gpu");  // Others' taints stay.
  CHECK(taints[1] ==
        json{{"key", "kiln.dev/quarantined"}, {"value", "1800003600"}, {"effect", "NoSchedule"}});
  // An earlier end does not shorten it; a later one extends it.
  REQUIRE(QuarantineNode(client, "n1", t0).ok());
  CHECK((*api.Object("nodes", "", "n1"))["spec"]["taints"][1]["value"] == "1800003600");
  REQUIRE(QuarantineNode(client, "n1", t0 + std::chrono::hours(2)).ok());
  CHECK((*api.Object("nodes", "", "n1"))["spec"]["taints"][1]["value"] == "1800007200");
  CHECK(kube::IsNotFound(QuarantineNode(client, "gone", t0)));

  // Before its end nothing is lifted; after it, only the quarantine goes.
  auto lifted = LiftEndedQuarantine(client, *api.Object("nodes", "", "n1"), t0);
  REQUIRE(lifted.ok());
  CHECK_FALSE(*lifted);
  lifted = LiftEndedQuarantine(client, *api.Object("nodes", "", "n1"), t0 + std::chrono::hours(2));
  REQUIRE(lifted.ok());
  CHECK(*lifted);
  taints = (*api.Object("nodes", "", "n1"))["spec"]["taints"];
  REQUIRE(taints.size() == 1);
  CHECK(taints[0]["key"] == "nvidia.com/gpu");

  // A node seen before a later change is not overwritten blindly.
  REQUIRE(QuarantineNode(client, "n1", t0).ok());
  json stale = *api.Object("nodes", "", "n1");
  json changed = stale;
  changed["metadata"]["labels"]["x"] = "y";
  api.Put("nodes", changed);
  CHECK(kube::IsConflict(LiftEndedQuarantine(client, stale, t0 + std::chrono::hours(1)).status()));

  // Put on by hand, without an end: never lifted.
  json manual = testing::GpuNode("n2", "z", "r", "nvl");
  manual["spec"]["taints"] = {{{"key", "kiln.dev/quarantined"}, {"effect", "NoSchedule"}}};
  CHECK_FALSE(TaintsWithoutEndedQuarantine(manual, t0 + std::chrono::hours(1000)));
  CHECK_FALSE(TaintsWithQuarantine(manual, t0));  // Already holds, for good.
}

}  // namespace
}  // namespace kiln::fleet
