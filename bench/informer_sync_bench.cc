// Benchmark: list+watch of N ConfigMaps with kiln's informer (time to sync,
// resident memory), then a no-op controller over all of them (reconciles per
// second). Prints one JSON line. Run through bench/informer_sync.sh, which
// starts a local cluster, creates the objects and measures kubectl alongside.
// Usage: informer_sync_bench KUBECONFIG NAMESPACE EXPECTED_OBJECTS WORKERS
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "kube/informer.h"
#include "kube/kubeconfig.h"
#include "runtime/controller.h"

namespace {

// VmRSS and VmHWM (peak) of this process, in KiB.
std::pair<long, long> Rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  long rss = 0, hwm = 0;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stol(line.substr(6));
  }
  return {rss, hwm};
}

class NoopReconciler final : public kiln::runtime::Reconciler {
 public:
  kiln::StatusOr<kiln::runtime::Result> Reconcile(const kiln::runtime::Context&,
                                                  const kiln::runtime::Request&) override {
    ++count;
    return kiln::runtime::Result{};
  }
  std::atomic<long> count{0};
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE EXPECTED_OBJECTS WORKERS\n", argv[0]);
    return 2;
  }
  const long expected = std::stol(argv[3]);
  const int workers = std::stoi(argv[4]);
  auto config = kiln::kube::LoadKubeconfig(argv[1]);
  if (!config.ok()) return std::fprintf(stderr, "%s\n", config.status().ToString().c_str()), 1;
  auto client = kiln::kube::Client::New(*config, {.qps = 0});
  if (!client.ok()) return std::fprintf(stderr, "%s\n", client.status().ToString().c_str()), 1;

  auto before = Rss();
  auto t0 = std::chrono::steady_clock::now();
  kiln::kube::Informer informer(**client, kiln::kube::resources::kConfigMaps, {.ns = argv[2]});
  NoopReconciler noop;
  kiln::runtime::Controller controller("noop", noop,
                                       {.workers = workers, .queue = {.overall_qps = 0}});
  controller.For(informer);
  informer.Start();
  while (!informer.HasSynced()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto synced = std::chrono::steady_clock::now();
  auto after_sync = Rss();
  long objects = static_cast<long>(informer.store().size());

  // Every object was enqueued by the informer's adds; drain them.
  auto c0 = std::chrono::steady_clock::now();
  controller.Start();
  while (noop.count.load() < objects) std::this_thread::sleep_for(std::chrono::microseconds(200));
  auto c1 = std::chrono::steady_clock::now();
  controller.Stop();
  informer.Stop();

  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  double reconcile_ms = ms(c0, c1);
  std::printf(
      "{\"objects\": %ld, \"expected\": %ld, \"sync_ms\": %.1f, \"rss_kib_before\": %ld, "
      "\"rss_kib_after_sync\": %ld, \"peak_rss_kib\": %ld, \"noop_workers\": %d, "
      "\"noop_reconciles\": %ld, \"noop_ms\": %.1f, \"noop_reconciles_per_s\": %.0f}\n",
      objects, expected, ms(t0, synced), before.first, after_sync.first, after_sync.second, workers,
      noop.count.load(), reconcile_ms,
      static_cast<double>(noop.count.load()) / (reconcile_ms / 1000));
  return objects == expected ? 0 : 1;
}
