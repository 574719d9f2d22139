// Benchmark: the gang placement engine and its fleet snapshot (issue 13). A
// synthetic fleet (default 10,000 8-GPU nodes across 4 clusters, zones, racks
// and NVLink domains as the local clusters label them, some nodes quarantined,
// cordoned or already busy with 20,000 pods) and 1,000 pending gangs of mixed
// sizes (1-512 workers, 1-8 GPUs each), placed in priority order with
// reservation as they go. Prints one JSON line: decisions per second, p50/p99
// decision time, snapshot event costs and the snapshot's memory.
//   placement_bench [--nodes 10000] [--clusters 4] [--gangs 1000] [--seed 1]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/flags.h"
#include "operator/placement/placement.h"
#include "operator/placement/well_known.h"

namespace {

using kiln::placement::ClusterInfo;
using kiln::placement::Gang;
using kiln::placement::NodeInfo;
using kiln::placement::Resources;
using kiln::placement::Snapshot;
using Clock = std::chrono::steady_clock;

constexpr int64_t kGi = int64_t{1} << 30;

struct Options {
  int nodes = 10000;
  int clusters = 4;
  int gangs = 1000;
  int pods = 20000;
  int nodes_per_nvlink_domain = 4;
  int nodes_per_rack = 16;
  int zones = 3;
  int seed = 1;
};

// Resident set size in bytes (Linux).
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0;
  int64_t pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

// "<CPU model>, <n> CPUs" (Linux), for the figures' record.
std::string Machine() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::string model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return model + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs";
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

std::string ClusterName(int c) { return "kiln-" + std::to_string(c + 1); }

NodeInfo MakeNode(const Options& o, int c, int i, int per_cluster, std::mt19937& rng) {
  const std::string cluster = ClusterName(c);
  NodeInfo n;
  n.name = cluster + "-gpu-" + std::to_string(i);
  const std::string product = c % 4 == 3 ? "NVIDIA-H200" : "NVIDIA-H100-80GB-HBM3";
  n.labels = {
      {"type", "kwok"},
      {kiln::placement::kHostnameLabel, n.name},
      {"kubernetes.io/os", "linux"},
      {"kubernetes.io/arch", "amd64"},
      {"node.kubernetes.io/instance-type", "gpu-8x"},
      {"topology.kubernetes.io/region", "local-" + cluster},
      {kiln::placement::kZoneLabel,
       cluster + "-zone-" + static_cast<char>('a' + i * o.zones / per_cluster)},
      {"kiln.dev/cluster", cluster},
      {kiln::placement::kRackLabel, cluster + "-rack-" + std::to_string(i / o.nodes_per_rack)},
      {kiln::placement::kNvlinkDomainLabel,
       cluster + "-nvl-" + std::to_string(i / o.nodes_per_nvlink_domain)},
      {"nvidia.com/gpu.present", "true"},
      {kiln::placement::kGpuProductLabel, product},
      {"nvidia.com/gpu.count", "8"},
      {"nvidia.com/gpu.memory", "81559"},
  };
  n.allocatable = {8, 96000, 1024 * kGi};
  const int roll = std::uniform_int_distribution<int>(0, 99)(rng);
  if (roll < 2) {
    n.quarantined = true;
    n.taints.push_back({kiln::placement::kQuarantineTaint, "", "NoSchedule"});
  } else if (roll < 4) {
    n.schedulable = false;
  } else if (roll < 6) {
    n.taints.push_back({"dedicated", "infra", "NoSchedule"});
  }
  return n;
}

Gang MakeGang(int i, std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Gang g;
  g.name = "team-" + std::to_string(i % 17) + "/job-" + std::to_string(i);
  // Most gangs are small, a few are huge: 50% 1-8 workers, 30% 9-64, 15%
  // 65-256, 5% 257-512.
  const int size_class = pick(0, 99);
  if (size_class < 50) {
    g.replicas = pick(1, 8);
  } else if (size_class < 80) {
    g.replicas = pick(9, 64);
  } else if (size_class < 95) {
    g.replicas = pick(65, 256);
  } else {
    g.replicas = pick(257, 512);
  }
  const int gpus[] = {1, 2, 4, 8, 8, 8};
  g.gpus_per_worker = gpus[pick(0, 5)];
  g.cpu_millis = 1000 * 12 * g.gpus_per_worker / 8 + 1000;
  g.memory_bytes = kGi * (16 + 100 * g.gpus_per_worker / 8);
  g.strategy =
      pick(0, 4) == 0 ? kiln::placement::Strategy::kSpread : kiln::placement::Strategy::kBinPack;
  g.topology_key =
      pick(0, 3) == 0 ? kiln::placement::kRackLabel : kiln::placement::kNvlinkDomainLabel;
  g.require_single_domain = g.replicas * g.gpus_per_worker <= 32 && pick(0, 2) == 0;
  g.allow_multi_cluster = pick(0, 2) == 0;
  if (pick(0, 4) == 0) g.node_selector = {{kiln::placement::kGpuProductLabel, "NVIDIA-H200"}};
  if (pick(0, 9) == 0) g.elastic = kiln::placement::ElasticPolicy{g.replicas / 2 + 1, g.replicas};
  g.priority = pick(0, 3);
  g.queue_order = i;
  return g;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  kiln::FlagSet flags("placement_bench",
                      "Usage: placement_bench [flags]\n"
                      "Places pending gangs on a synthetic fleet; prints one JSON line.");
  flags.Int("nodes", &o.nodes, 1, 1000000, "GPU nodes in the fleet");
  flags.Int("clusters", &o.clusters, 1, 100, "member clusters");
  flags.Int("gangs", &o.gangs, 1, 1000000, "pending gangs");
  flags.Int("pods", &o.pods, 0, 10000000, "kiln pods already running (1 GPU each)");
  flags.Int("nodes-per-nvlink-domain", &o.nodes_per_nvlink_domain, 1, 1000, "");
  flags.Int("nodes-per-rack", &o.nodes_per_rack, 1, 10000, "");
  flags.Int("zones", &o.zones, 1, 26, "zones per cluster");
  flags.Int("seed", &o.seed, 0, 1 << 30, "seed of the fleet and the gangs");
  if (auto exit_code = flags.ParseOrExit(argc, argv, 1)) return *exit_code;

  std::mt19937 rng(static_cast<unsigned>(o.seed));
  const int per_cluster = o.nodes / o.clusters;

  // Initial sync: every node, then the running pods, as informers deliver them.
  const int64_t rss_before = ResidentBytes();
  const auto t_build = Clock::now();
  Snapshot fleet;
  std::vector<std::pair<std::string, std::string>> node_names;
  for (int c = 0; c < o.clusters; ++c) {
    ClusterInfo info;
    info.name = ClusterName(c);
    info.labels = {{"topology.kubernetes.io/region", "local-" + info.name}};
    info.priority = c == 0 ? 1 : 0;
    fleet.UpsertCluster(info);
    for (int i = 0; i < per_cluster; ++i) {
      NodeInfo n = MakeNode(o, c, i, per_cluster, rng);
      node_names.emplace_back(info.name, n.name);
      if (!fleet.UpsertNode(info.name, std::move(n)).ok()) return 1;
    }
  }
  const auto t_nodes = Clock::now();
  for (int p = 0; p < o.pods; ++p) {
    const auto& [cluster, node] =
        node_names[std::uniform_int_distribution<size_t>(0, node_names.size() - 1)(rng)];
    auto free = fleet.Free(cluster, node);
    if (!free.ok() || free->gpus == 0) continue;
    if (!fleet.AddPod(cluster, node, "running/pod-" + std::to_string(p), {1, 4000, 64 * kGi})
             .ok()) {
      return 1;
    }
  }
  const auto t_pods = Clock::now();
  const int64_t rss_after = ResidentBytes();

  // Snapshot event costs on a copy, so the fleet stays as built.
  Snapshot events = fleet;
  constexpr int kEvents = 200000;
  std::vector<NodeInfo> sample;
  for (int i = 0; i < 1000; ++i) {
    const auto& [cluster, node] = node_names[static_cast<size_t>(i * 7) % node_names.size()];
    const auto* c = events.cluster(cluster);
    sample.push_back(c->node(c->nodes().find(node)->second));
  }
  auto t0 = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    const size_t k = static_cast<size_t>(i) % sample.size();
    const std::string cluster = sample[k].labels.at("kiln.dev/cluster");
    if (!events.UpsertNode(cluster, sample[k]).ok()) return 1;  // a heartbeat: no change
  }
  const double heartbeat_s = Seconds(Clock::now() - t0);
  t0 = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    const size_t k = static_cast<size_t>(i) % sample.size();
    NodeInfo n = sample[k];
    n.schedulable = (i / static_cast<int>(sample.size())) % 2 == 1;  // cordon, uncordon
    const std::string cluster = n.labels.at("kiln.dev/cluster");
    if (!events.UpsertNode(cluster, std::move(n)).ok()) return 1;
  }
  const double node_change_s = Seconds(Clock::now() - t0);
  t0 = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    const auto& [cluster, node] = node_names[static_cast<size_t>(i) % node_names.size()];
    const std::string key = "bench/pod-" + std::to_string(i % 5000);
    if (i % 2 == 0) {
      if (!events.AddPod(cluster, node, key, {1, 1000, kGi}).ok()) return 1;
    } else {
      if (!events.RemovePod(cluster, key).ok()) return 1;
    }
  }
  const double pod_s = Seconds(Clock::now() - t0);
  // The same with a reader holding a copy before every event: each event then
  // clones the usage and reservations of its cluster (the worst case).
  constexpr int kSharedEvents = 2000;
  t0 = Clock::now();
  for (int i = 0; i < kSharedEvents; ++i) {
    Snapshot reader = events;
    const auto& [cluster, node] = node_names[static_cast<size_t>(i * 13) % node_names.size()];
    if (!events.AddPod(cluster, node, "shared/pod-" + std::to_string(i), {1, 1000, kGi}).ok()) {
      return 1;
    }
  }
  const double shared_pod_s = Seconds(Clock::now() - t0);
  // A node change with a reader holding a copy clones that cluster's topology.
  constexpr int kSharedNodeEvents = 200;
  t0 = Clock::now();
  for (int i = 0; i < kSharedNodeEvents; ++i) {
    Snapshot reader = events;
    NodeInfo n = sample[static_cast<size_t>(i) % sample.size()];
    n.labels["bench/touched"] = std::to_string(i);
    const std::string cluster = n.labels.at("kiln.dev/cluster");
    if (!events.UpsertNode(cluster, std::move(n)).ok()) return 1;
  }
  const double shared_node_s = Seconds(Clock::now() - t0);
  t0 = Clock::now();
  constexpr int kCopies = 100000;
  size_t sink = 0;
  for (int i = 0; i < kCopies; ++i) {
    Snapshot reader = fleet;
    sink += reader.clusters().size();
  }
  const double copy_s = Seconds(Clock::now() - t0);

  // The pending gangs, placed in batch order on a copy, each decision timed.
  std::vector<Gang> gangs;
  for (int i = 0; i < o.gangs; ++i) gangs.push_back(MakeGang(i, rng));
  std::vector<const Gang*> order;
  for (const auto& g : gangs) order.push_back(&g);
  std::stable_sort(order.begin(), order.end(), [](const Gang* a, const Gang* b) {
    return std::make_tuple(-a->priority, a->queue_order, a->name) <
           std::make_tuple(-b->priority, b->queue_order, b->name);
  });
  Snapshot timed = fleet;
  std::vector<double> decision_us;
  std::vector<double> placed_us;
  std::vector<double> refused_us;
  int placed = 0;
  int64_t placed_workers = 0;
  int64_t placed_gpus = 0;
  std::string example_reason;
  const auto t_batch = Clock::now();
  for (const Gang* g : order) {
    const auto d0 = Clock::now();
    auto p = kiln::placement::Place(*g, timed);
    if (p.ok() && !kiln::placement::Reserve(*p, timed).ok()) return 1;
    const double us = Seconds(Clock::now() - d0) * 1e6;
    decision_us.push_back(us);
    if (p.ok()) {
      ++placed;
      placed_us.push_back(us);
      placed_workers += p->replicas;
      placed_gpus += int64_t{p->replicas} * g->gpus_per_worker;
    } else {
      refused_us.push_back(us);
      if (example_reason.empty()) example_reason = p.status().message();
    }
  }
  const double batch_s = Seconds(Clock::now() - t_batch);

  // PlaceBatch itself, on a fresh copy, must decide the same.
  Snapshot batched = fleet;
  const auto t_api = Clock::now();
  auto decisions = kiln::placement::PlaceBatch(gangs, batched);
  const double api_s = Seconds(Clock::now() - t_api);
  int api_placed = 0;
  for (const auto& d : decisions) api_placed += d.placement.ok() ? 1 : 0;
  if (api_placed != placed) {
    std::fprintf(stderr, "PlaceBatch placed %d, the timed loop %d\n", api_placed, placed);
    return 1;
  }

  int64_t total_gpus = 0;
  int64_t free_gpus = 0;
  for (const auto& [name, c] : fleet.clusters()) {
    const auto cap = fleet.ClusterCapacity(name);
    total_gpus += cap.gpus;
    free_gpus += cap.free_gpus;
  }
  nlohmann::json out = {
      {"machine", Machine()},
      {"nodes", o.nodes},
      {"clusters", o.clusters},
      {"gangs", o.gangs},
      {"runningPods", o.pods},
      {"seed", o.seed},
      {"schedulableGPUs", total_gpus},
      {"freeGPUsBefore", free_gpus},
      {"placed", placed},
      {"placedWorkers", placed_workers},
      {"placedGPUs", placed_gpus},
      {"refused", o.gangs - placed},
      {"decisionsPerSecond", o.gangs / batch_s},
      {"placeBatchDecisionsPerSecond", o.gangs / api_s},
      {"decisionP50Micros", Percentile(decision_us, 0.5)},
      {"decisionP99Micros", Percentile(decision_us, 0.99)},
      {"decisionMaxMicros", Percentile(decision_us, 1.0)},
      {"placedP99Micros", Percentile(placed_us, 0.99)},
      {"refusedP99Micros", Percentile(refused_us, 0.99)},
      {"initialSyncNodesPerSecond", o.nodes / Seconds(t_nodes - t_build)},
      {"initialSyncPodsPerSecond", o.pods / Seconds(t_pods - t_nodes)},
      {"nodeHeartbeatEventsPerSecond", kEvents / heartbeat_s},
      {"nodeChangeEventsPerSecond", kEvents / node_change_s},
      {"podEventsPerSecond", kEvents / pod_s},
      {"podEventsPerSecondWithReaderCopy", kSharedEvents / shared_pod_s},
      {"nodeChangeEventsPerSecondWithReaderCopy", kSharedNodeEvents / shared_node_s},
      {"snapshotCopyMicros", copy_s / kCopies * 1e6},
      {"snapshotResidentMiB", static_cast<double>(rss_after - rss_before) / (1 << 20)},
      {"exampleReason", example_reason},
      {"sink", sink},
  };
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
