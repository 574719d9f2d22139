// A leader-election candidate process for the integration tests: campaigns on
// a Lease, prints "LEADING <identity>" when elected and "STOPPED <identity>"
// when it stops leading; SIGTERM stops it cleanly (releasing the lease).
// Usage: lease_candidate KUBECONFIG NAMESPACE LEASE IDENTITY
#include <csignal>
#include <cstdio>

#include "operator/kube/kubeconfig.h"
#include "operator/runtime/leader_election.h"

namespace {
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE LEASE IDENTITY\n", argv[0]);
    return 2;
  }
  std::signal(SIGTERM, OnSignal);
  auto config = kiln::kube::LoadKubeconfig(argv[1]);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  auto client = kiln::kube::Client::New(*config);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  using std::chrono::milliseconds;
  kiln::runtime::LeaderElectionConfig lec{.lease_namespace = argv[2],
                                          .lease_name = argv[3],
                                          .identity = argv[4],
                                          .lease_duration = milliseconds(4000),
                                          .renew_deadline = milliseconds(3000),
                                          .retry_period = milliseconds(500)};
  kiln::runtime::LeaderElector elector(**client, lec);
  std::string id = argv[4];
  elector.Run([&] { std::printf("LEADING %s\n", id.c_str()), std::fflush(stdout); },
              [&] { std::printf("STOPPED %s\n", id.c_str()), std::fflush(stdout); }, g_stop);
  return 0;
}
