// Leader election between real candidate processes on one Lease of the
// shared fixture's first cluster.
#include "operator/runtime/leader_election.h"

#include <chrono>
#include <iostream>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/support/background_process.h"
#include "tests/support/local_clusters.h"
#include "tests/support/temp_dir.h"

namespace kiln::runtime {
namespace {

using kiln::testing::BackgroundProcess;
using kiln::testing::LocalClusters;
using kiln::testing::TempDir;
using std::chrono::steady_clock;

bool WaitFor(const BackgroundProcess& p, const std::string& text, std::chrono::seconds limit) {
  auto deadline = steady_clock::now() + limit;
  while (p.Output().find(text) == std::string::npos) {
    if (steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

TEST_CASE("two candidate processes: one leads, the other takes over when it dies",
          "[integration][leader]") {
  auto lc = LocalClusters::FromEnvironment();
  REQUIRE(lc.ok());
  const auto& cluster = lc->clusters()[0];
  auto client = lc->Client(cluster);
  REQUIRE(client.ok());
  const std::string lease = kiln::testing::UniqueName("kiln-leader");
  TempDir dir;
  auto candidate = [&](const std::string& id) {
    return std::make_unique<BackgroundProcess>(
        std::vector<std::string>{KILN_LEASE_CANDIDATE, cluster.kubeconfig, "default", lease, id},
        dir.path() + "/" + id + ".log");
  };
  auto holder = [&] {
    auto l = (*client)->Get(kube::resources::kLeases, "default", lease);
    REQUIRE(l.ok());
    return *l;
  };

  auto a = candidate("a");
  REQUIRE(WaitFor(*a, "LEADING a", std::chrono::seconds(60)));
  auto b = candidate("b");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(b->Output().find("LEADING") == std::string::npos);  // Only one leads.
  CHECK(holder()["spec"]["holderIdentity"] == "a");

  // A crashes without releasing: B must wait out the lease, then lead.
  a->Signal(SIGKILL);
  auto killed = steady_clock::now();
  REQUIRE(WaitFor(*b, "LEADING b", std::chrono::seconds(60)));
  auto failover =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - killed);
  std::cout << "leader failover after SIGKILL: " << failover.count()
            << " ms (lease 4 s, retry 0.5 s)\n";
  kube::json after = holder();
  CHECK(after["spec"]["holderIdentity"] == "b");
  CHECK(after["spec"]["leaseTransitions"].get<int>() >= 1);

  // B stops cleanly and releases: C takes over without waiting for expiry.
  b->Signal(SIGTERM);
  CHECK(b->Wait() == 0);
  CHECK(b->Output().find("STOPPED b") != std::string::npos);
  CHECK(holder()["spec"]["holderIdentity"] == "");
  auto c = candidate("c");
  REQUIRE(WaitFor(*c, "LEADING c", std::chrono::seconds(60)));
}

TEST_CASE("leader election timings are validated", "[integration][leader]") {
  using std::chrono::seconds;
  CHECK(LeaderElector::Validate({"ns", "l", "me"}).ok());
  CHECK(LeaderElector::Validate({"ns", "l", ""}).code() == StatusCode::kInvalidArgument);
  CHECK(LeaderElector::Validate({.lease_namespace = "ns",
                                 .lease_name = "l",
                                 .identity = "me",
                                 .lease_duration = seconds(5),
                                 .renew_deadline = seconds(10)})
            .code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::runtime
