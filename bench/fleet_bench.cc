// Benchmark driver: gang placement with the real API servers in the loop
// (issue 13), run by bench/fleet_bench.sh on local kwok clusters.
//
//   fleet_bench setup  --clusters NAME=KUBECONFIG,... --hub NAME [--pods 20000]
//     MemberClusters and their kubeconfig Secrets on the hub; 2% of the nodes
//     quarantined, 2% cordoned, 2% tainted dedicated=infra:NoSchedule (as
//     placement_bench does); `--pods` running 1-GPU pods bound to random
//     nodes (nodeName: filler, no scheduler in the loop).
//   fleet_bench kiln   --clusters ... --hub NAME --run N [--gangs 1000] [--seed 1] --plan FILE
//     kiln's fleet and TrainingJob controllers in this process (a Manager as
//     kiln-operator wires it, without the progress reader, which would dial
//     kwok's fake pod IPs); once every MemberCluster is Ready, creates the
//     gangs as TrainingJobs in namespace fleetbench-run-N and watches, with
//     its own informers, each job's placement decision (status.placement or
//     Scheduled=False) and each worker pod's binding by its member's
//     kube-scheduler. Writes what was placed where to FILE for the anchor.
//   fleet_bench anchor --clusters ... --run N --plan FILE
//     The anchor: the same pods (per gang, per cluster, the same requests and
//     node selector) created ungated and unpinned, with no kiln in the loop;
//     kube-scheduler alone binds them.
// `kiln` and `anchor` print one JSON line and delete their namespaces (and
// wait until they are gone) before they exit.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "base/flags.h"
#include "kube/api_error.h"
#include "kube/client.h"
#include "kube/informer.h"
#include "kube/kubeconfig.h"
#include "kube/store.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/trainingjob/reconciler.h"
#include "operator/controllers/trainingjob/worker_pods.h"
#include "operator/fleet/fleet.h"
#include "operator/placement/well_known.h"
#include "runtime/manager.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace kr = kiln::kube::resources;
namespace v1 = kiln::api::v1alpha1;

constexpr const char* kSystemNamespace = "fleetbench";
constexpr const char* kFillerNamespace = "fleetbench-filler";
constexpr const char* kH200 = "NVIDIA-H200";

struct Options {
  std::string clusters;  // NAME=KUBECONFIG,...
  std::string hub;
  int pods = 20000;
  int gangs = 1000;
  int seed = 1;
  int run = 1;
  std::string plan;
  int workers = 4;  // TrainingJob reconcile workers, as kiln-operator runs them.
  double qps = 50;  // kiln-operator's default client rate limit.
  int burst = 100;
  int creators = 8;
  int timeout_s = 900;
  int stall_s = 60;
};

struct Cluster {
  std::string name;
  std::string kubeconfig;
  std::unique_ptr<kiln::kube::Client> client;  // The driver's own: no rate limit.
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

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

[[noreturn]] void Die(const std::string& what, const kiln::Status& s) {
  std::fprintf(stderr, "fleet_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Must(kiln::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(what, v.status());
  return std::move(*v);
}

std::vector<Cluster> Connect(const std::string& spec) {
  std::vector<Cluster> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) Die("--clusters", kiln::Status::InvalidArgument(item));
    Cluster c{item.substr(0, eq), item.substr(eq + 1), nullptr};
    auto config = Must(kiln::kube::LoadKubeconfig(c.kubeconfig), c.kubeconfig);
    c.client = Must(kiln::kube::Client::New(config, {.qps = 0, .max_retries = 8}), c.name);
    out.push_back(std::move(c));
  }
  if (out.empty()) Die("--clusters", kiln::Status::InvalidArgument("no clusters"));
  return out;
}

// Runs fn(i) for i in [0, n) on `threads` threads.
void Parallel(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (auto& t : pool) t.join();
}

void CreateOrKeep(kiln::kube::Client& c, const kiln::kube::Resource& r, const std::string& ns,
                  const json& obj) {
  auto made = c.Create(r, ns, obj);
  if (!made.ok() && !kiln::kube::IsAlreadyExists(made.status())) Die("create", made.status());
}

void CreateNamespace(kiln::kube::Client& c, const std::string& ns) {
  CreateOrKeep(c, kr::kNamespaces, "", {{"metadata", {{"name", ns}}}});
}

// Deletes `ns` in every cluster and waits (bounded) until it is gone. Its
// TrainingJobs and pods are deleted first, at once (grace 0): a busy
// kube-controller-manager left the hub's namespace untouched for minutes.
void DeleteNamespace(std::vector<Cluster>& clusters, const std::string& ns, int threads) {
  for (auto& c : clusters) {
    for (const kiln::kube::Resource* r : {&v1::kTrainingJobs, &kr::kPods}) {
      auto list = c.client->ListAll(*r, ns);
      if (!list.ok()) continue;  // No TrainingJobs in a member without kiln's CRDs.
      const json items = (*list)["items"];
      Parallel(static_cast<int>(items.size()), threads, [&](int i) {
        const std::string name = items[static_cast<size_t>(i)]["metadata"]["name"];
        auto s = c.client->Delete(*r, ns, name, {.grace_period_seconds = 0}).status();
        if (!s.ok() && !kiln::kube::IsNotFound(s)) Die("delete " + name, s);
      });
    }
    auto s = c.client->Delete(kr::kNamespaces, "", ns).status();
    if (!s.ok() && !kiln::kube::IsNotFound(s)) Die("delete namespace " + ns, s);
  }
  const auto deadline = Clock::now() + std::chrono::minutes(10);
  for (auto& c : clusters) {
    while (!kiln::kube::IsNotFound(c.client->Get(kr::kNamespaces, "", ns).status())) {
      if (Clock::now() > deadline) {
        Die("namespace " + ns + " in " + c.name, kiln::Status::DeadlineExceeded("still there"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

// ---- setup ----

int Setup(const Options& o) {
  auto clusters = Connect(o.clusters);
  Cluster* hub = nullptr;
  for (auto& c : clusters) {
    if (c.name == o.hub) hub = &c;
  }
  if (hub == nullptr) Die("--hub", kiln::Status::InvalidArgument(o.hub + " not in --clusters"));
  CreateNamespace(*hub->client, kSystemNamespace);
  for (auto& c : clusters) {
    auto kubeconfig = Must(kiln::ReadFile(c.kubeconfig), c.kubeconfig);
    CreateOrKeep(*hub->client, kr::kSecrets, kSystemNamespace,
                 {{"metadata", {{"name", c.name}, {"namespace", kSystemNamespace}}},
                  {"data", {{"kubeconfig", kiln::Base64Encode(kubeconfig)}}}});
    // The example's heartbeat settings (examples/membercluster.yaml).
    CreateOrKeep(*hub->client, v1::kMemberClusters, "",
                 {{"apiVersion", "kiln.dev/v1alpha1"},
                  {"kind", "MemberCluster"},
                  {"metadata", {{"name", c.name}}},
                  {"spec",
                   {{"kubeconfigSecretRef", {{"name", c.name}, {"namespace", kSystemNamespace}}},
                    {"heartbeatInterval", "10s"},
                    {"unreachableAfter", "40s"}}}});
  }

  // Node conditions, then filler pods on random nodes with a free GPU.
  std::mt19937 rng(static_cast<unsigned>(o.seed));
  struct NodeRef {
    Cluster* cluster;
    std::string name;
    int used = 0;
  };
  std::vector<NodeRef> nodes;
  std::vector<std::pair<NodeRef*, std::string>> patches;
  const long long quarantine_end = std::chrono::duration_cast<std::chrono::seconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count() +
                                   30 * 24 * 3600;
  for (auto& c : clusters) {
    json list = Must(c.client->ListAll(kr::kNodes, ""), "list nodes of " + c.name);
    std::vector<std::string> names;
    for (const auto& n : list["items"]) names.push_back(n["metadata"]["name"]);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) nodes.push_back({&c, n});
  }
  for (auto& n : nodes) {
    const int roll = std::uniform_int_distribution<int>(0, 99)(rng);
    if (roll < 2) {
      json taint = {{"key", kiln::placement::kQuarantineTaint},
                    {"value", std::to_string(quarantine_end)},
                    {"effect", "NoSchedule"}};
      json patch;
      patch["spec"]["taints"] = json::array({taint});
      patches.emplace_back(&n, patch.dump());
    } else if (roll < 4) {
      patches.emplace_back(&n, R"({"spec":{"unschedulable":true}})");
    } else if (roll < 6) {
      patches.emplace_back(
          &n, R"({"spec":{"taints":[{"key":"dedicated","value":"infra","effect":"NoSchedule"}]}})");
    }
  }
  const auto t0 = Clock::now();
  Parallel(static_cast<int>(patches.size()), o.creators, [&](int i) {
    auto& [n, body] = patches[static_cast<size_t>(i)];
    auto s = n->cluster->client->Patch(kr::kNodes, "", n->name, kiln::kube::PatchType::kMerge, body)
                 .status();
    if (!s.ok()) Die("patch node " + n->name, s);
  });
  for (auto& c : clusters) CreateNamespace(*c.client, kFillerNamespace);
  std::vector<NodeRef*> filler;
  for (int p = 0; p < o.pods; ++p) {
    NodeRef& n = nodes[std::uniform_int_distribution<size_t>(0, nodes.size() - 1)(rng)];
    if (n.used >= 8) continue;
    ++n.used;
    filler.push_back(&n);
  }
  const auto t1 = Clock::now();
  Parallel(static_cast<int>(filler.size()), o.creators, [&](int i) {
    const NodeRef& n = *filler[static_cast<size_t>(i)];
    json pod = {
        {"apiVersion", "v1"},
        {"kind", "Pod"},
        {"metadata",
         {{"name", "filler-" + std::to_string(i)},
          {"namespace", kFillerNamespace},
          {"labels", {{"app", "fleetbench-filler"}}}}},
        {"spec",
         {{"nodeName", n.name},
          {"tolerations", json::array({{{"operator", "Exists"}}})},
          {"containers",
           json::array(
               {{{"name", "main"},
                 {"image", "registry.k8s.io/pause:3.10"},
                 {"resources",
                  {{"requests", {{"cpu", "4"}, {"memory", "64Gi"}, {"nvidia.com/gpu", "1"}}},
                   {"limits", {{"nvidia.com/gpu", "1"}}}}}}})}}}};
    CreateOrKeep(*n.cluster->client, kr::kPods, kFillerNamespace, pod);
  });
  const auto t2 = Clock::now();
  json out = {{"step", "setup"},
              {"machine", Machine()},
              {"clusters", clusters.size()},
              {"nodes", nodes.size()},
              {"nodePatches", patches.size()},
              {"nodePatchSeconds", Seconds(t1 - t0)},
              {"fillerPods", filler.size()},
              {"fillerCreateSeconds", Seconds(t2 - t1)}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

// ---- the gangs ----

struct GangSpec {
  std::string name;
  int replicas = 1;
  int gpus = 8;
  int64_t cpu_millis = 0;
  int64_t memory_gi = 0;
  bool spread = false;
  std::string topology_key;
  bool multi_cluster = false;
  bool h200 = false;
  int elastic_min = 0;  // 0: not elastic.
};

// The least common multiple of [lo, hi], or 0 above int32's range.
int64_t LcmOfRange(int lo, int hi) {
  int64_t l = 1;
  for (int i = lo; i <= hi; ++i) {
    l = std::lcm(l, int64_t{i});
    if (l > (int64_t{1} << 31) - 1) return 0;
  }
  return l;
}

// placement_bench's mix (bench/placement_bench.cc MakeGang), less what the
// TrainingJob API cannot say: priorities (a PriorityClass would have to
// exist in every member) and "all workers in one domain". An elastic gang
// needs a global batch every size in its range divides; one whose range is
// too wide for that is not elastic here.
GangSpec MakeGang(int i, std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  GangSpec g;
  char name[32];
  std::snprintf(name, sizeof name, "job-%04d", i);
  g.name = name;
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
  g.gpus = gpus[pick(0, 5)];
  g.cpu_millis = 1000 * 12 * g.gpus / 8 + 1000;
  g.memory_gi = 16 + 100 * g.gpus / 8;
  g.spread = pick(0, 4) == 0;
  g.topology_key =
      pick(0, 3) == 0 ? kiln::placement::kRackLabel : kiln::placement::kNvlinkDomainLabel;
  if (g.replicas * g.gpus <= 32) (void)pick(0, 2);  // placement_bench's single-domain roll.
  g.multi_cluster = pick(0, 2) == 0;
  g.h200 = pick(0, 4) == 0;
  if (pick(0, 9) == 0 && LcmOfRange(g.replicas / 2 + 1, g.replicas) > 0) {
    g.elastic_min = g.replicas / 2 + 1;
  }
  (void)pick(0, 3);  // The priority roll.
  return g;
}

json TrainingJob(const GangSpec& g, const std::string& ns) {
  const int64_t batch = g.elastic_min > 0 ? LcmOfRange(g.elastic_min, g.replicas) : g.replicas;
  json workers = {{"replicas", g.replicas},
                  {"gpusPerWorker", g.gpus},
                  {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"},
                  {"resources",
                   {{"requests",
                     {{"cpu", std::to_string(g.cpu_millis) + "m"},
                      {"memory", std::to_string(g.memory_gi) + "Gi"}}}}}};
  if (g.h200) workers["nodeSelector"] = {{kiln::placement::kGpuProductLabel, kH200}};
  json spec = {
      {"model",
       {{"architecture", "gpt"},
        {"layers", 2},
        {"hiddenSize", 64},
        {"heads", 4},
        {"vocabSize", 257},
        {"contextLength", 64}}},
      {"data", {{"uri", "file:///usr/share/games/fortunes"}}},
      {"training",
       {{"steps", 100}, {"globalBatchSize", batch}, {"microBatchSize", 1}, {"sequenceLength", 64}}},
      {"workers", workers},
      {"placement",
       {{"strategy", g.spread ? "Spread" : "BinPack"},
        {"topologyKey", g.topology_key},
        {"allowMultiCluster", g.multi_cluster}}},
      {"checkpoint", {{"uri", "file:///kiln/" + g.name}}}};
  if (g.elastic_min > 0)
    spec["elastic"] = {{"minReplicas", g.elastic_min}, {"maxReplicas", g.replicas}};
  return {{"apiVersion", "kiln.dev/v1alpha1"},
          {"kind", "TrainingJob"},
          {"metadata", {{"name", g.name}, {"namespace", ns}}},
          {"spec", spec}};
}

// What the driver's own informers saw, with the time each thing was first seen.
class Observer {
 public:
  explicit Observer(Clock::time_point start) : start_(start) {}

  struct Job {
    std::optional<double> decided;  // seconds since start
    bool placed = false;
    int workers = 0;
    json placement;
    std::string reason;
    std::map<std::string, double> bound;  // pod key → seconds since start
    std::optional<double> all_bound;
  };

  void OnJob(const json& job) {
    const std::string name = job["metadata"].value("name", "");
    const json status = job.value("status", json::object());
    std::lock_guard<std::mutex> lock(mu_);
    Job& j = jobs_[name];
    if (j.decided) return;
    if (status.contains("placement") && !status["placement"].empty()) {
      j.decided = Now();
      j.placed = true;
      j.placement = status["placement"];
      for (const auto& c : j.placement) j.workers += c.value("workers", 0);
      MaybeAllBound(j);
      return;
    }
    for (const auto& c : status.value("conditions", json::array())) {
      if (c.value("type", "") == "Scheduled" && c.value("status", "") == "False") {
        j.decided = Now();
        j.reason = c.value("reason", "");
      }
    }
  }

  // A pod of a gang (kiln's or the anchor's): bound once spec.nodeName is set.
  // Every pod seen is counted, and whether kube-scheduler last called it
  // Unschedulable (a placement that collided with another leaves its pods so).
  void OnPod(const std::string& cluster, const json& pod) {
    const std::string key = cluster + "/" + kiln::kube::Store::KeyOf(pod);
    bool unschedulable = false;
    for (const auto& c : pod.value("status", json::object()).value("conditions", json::array())) {
      unschedulable |= c.value("type", "") == "PodScheduled" && c.value("status", "") == "False" &&
                       c.value("reason", "") == "Unschedulable";
    }
    const bool bound = !pod.value("spec", json::object()).value("nodeName", "").empty();
    {
      std::lock_guard<std::mutex> lock(mu_);
      unschedulable_[key] = unschedulable && !bound;
    }
    if (!bound) return;
    const std::string job =
        pod["metadata"].value("labels", json::object()).value(kiln::trainingjob::kJobNameLabel, "");
    if (job.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    Job& j = jobs_[job];
    if (j.bound.emplace(cluster + "/" + kiln::kube::Store::KeyOf(pod), Now()).second) {
      ++bound_pods_;
      MaybeAllBound(j);
    }
  }

  // For the anchor: gang `name` is complete with `workers` pods bound.
  void Expect(const std::string& name, int workers) {
    std::lock_guard<std::mutex> lock(mu_);
    Job& j = jobs_[name];
    j.placed = true;
    j.workers = workers;
    j.decided = 0;
    MaybeAllBound(j);
  }

  std::map<std::string, Job> jobs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return jobs_;
  }
  // (decided jobs, placed jobs fully bound, pods bound): progress.
  std::tuple<int, int, int64_t> Progress() const {
    std::lock_guard<std::mutex> lock(mu_);
    int decided = 0, bound = 0;
    for (const auto& [n, j] : jobs_) {
      decided += j.decided ? 1 : 0;
      bound += j.all_bound ? 1 : 0;
    }
    return {decided, bound, bound_pods_};
  }
  double Now() const { return Seconds(Clock::now() - start_); }
  // (pods seen, pods Unschedulable as last seen).
  std::pair<int64_t, int64_t> PodStates() const {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t unschedulable = 0;
    for (const auto& [key, u] : unschedulable_) unschedulable += u ? 1 : 0;
    return {static_cast<int64_t>(unschedulable_.size()), unschedulable};
  }

 private:
  void MaybeAllBound(Job& j) {
    if (j.placed && !j.all_bound && j.workers > 0 &&
        static_cast<int>(j.bound.size()) >= j.workers) {
      j.all_bound = Now();
    }
  }

  const Clock::time_point start_;
  mutable std::mutex mu_;
  std::map<std::string, Job> jobs_;
  int64_t bound_pods_ = 0;
  std::map<std::string, bool> unschedulable_;  // "cluster/ns/name" → Unschedulable
};

// Waits until `done` or no progress for stall_s or timeout_s; true when done.
bool WaitProgress(const Options& o, const Observer& obs, const std::function<bool()>& done) {
  const auto start = Clock::now();
  auto last = obs.Progress();
  auto last_change = Clock::now();
  while (!done()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto now = obs.Progress();
    if (now != last) {
      last = now;
      last_change = Clock::now();
    }
    if (Clock::now() - last_change > std::chrono::seconds(o.stall_s) ||
        Clock::now() - start > std::chrono::seconds(o.timeout_s)) {
      return false;
    }
  }
  return true;
}

std::vector<std::unique_ptr<kiln::kube::Informer>> WatchPods(std::vector<Cluster>& clusters,
                                                             const std::string& ns, Observer& obs) {
  std::vector<std::unique_ptr<kiln::kube::Informer>> out;
  for (auto& c : clusters) {
    auto inf = std::make_unique<kiln::kube::Informer>(
        *c.client, kr::kPods,
        kiln::kube::InformerOptions{.ns = ns, .label_selector = kiln::trainingjob::kJobNameLabel});
    const std::string name = c.name;
    inf->AddHandlers(
        {.on_add = [&obs, name](const kiln::kube::Object& p) { obs.OnPod(name, *p); },
         .on_update = [&obs, name](const kiln::kube::Object&,
                                   const kiln::kube::Object& p) { obs.OnPod(name, *p); },
         .on_delete = nullptr});
    inf->Start();
    if (!inf->WaitForSync(std::chrono::seconds(60))) {
      Die("pod informer of " + c.name, kiln::Status::DeadlineExceeded("not synced"));
    }
    out.push_back(std::move(inf));
  }
  return out;
}

// The figures every mode shares, from what the observer saw; `t_last_create`
// is when the last create returned.
json Figures(const Observer& obs, double t_last_create,
             const std::map<std::string, double>& created) {
  std::vector<double> decision, gang_bound;
  double last_decision = 0, last_bound = 0;
  int placed = 0, refused = 0, complete = 0, undecided = 0;
  int64_t workers = 0, bound = 0, stuck = 0;
  std::map<std::string, int> reasons;
  for (const auto& [name, j] : obs.jobs()) {
    const auto c = created.find(name);
    if (c == created.end()) continue;
    if (!j.decided) {
      ++undecided;
      continue;
    }
    decision.push_back(*j.decided - c->second);
    last_decision = std::max(last_decision, *j.decided);
    if (!j.placed) {
      ++refused;
      ++reasons[j.reason];
      continue;
    }
    ++placed;
    workers += j.workers;
    bound += std::min<int64_t>(j.workers, static_cast<int64_t>(j.bound.size()));
    if (j.all_bound) {
      ++complete;
      gang_bound.push_back(*j.all_bound - c->second);
      last_bound = std::max(last_bound, *j.all_bound);
    } else {
      stuck += j.workers - static_cast<int64_t>(j.bound.size());
    }
  }
  const int decided = placed + refused;
  const auto [pods_seen, pods_unschedulable] = obs.PodStates();
  return {{"created", created.size()},
          {"podsSeen", pods_seen},
          {"podsUnschedulable", pods_unschedulable},
          {"createSeconds", t_last_create},
          {"decided", decided},
          {"undecided", undecided},
          {"placed", placed},
          {"refused", refused},
          {"refusedReasons", reasons},
          {"decisionsPerSecond", last_decision > 0 ? decided / last_decision : 0},
          {"decisionP50Seconds", Percentile(decision, 0.5)},
          {"decisionP99Seconds", Percentile(decision, 0.99)},
          {"decisionMaxSeconds", Percentile(decision, 1.0)},
          {"placedWorkers", workers},
          {"boundPods", bound},
          {"gangsAllBound", complete},
          {"podsNeverBound", stuck},
          {"allBoundSeconds", last_bound},
          {"gangsBoundPerSecond", last_bound > 0 ? complete / last_bound : 0},
          {"podsBoundPerSecond", last_bound > 0 ? static_cast<double>(bound) / last_bound : 0},
          {"gangBoundP50Seconds", Percentile(gang_bound, 0.5)},
          {"gangBoundP99Seconds", Percentile(gang_bound, 0.99)}};
}

// ---- kiln ----

int RunKiln(const Options& o) {
  auto clusters = Connect(o.clusters);
  Cluster* hub = nullptr;
  for (auto& c : clusters) {
    if (c.name == o.hub) hub = &c;
  }
  if (hub == nullptr) Die("--hub", kiln::Status::InvalidArgument(o.hub + " not in --clusters"));
  const std::string ns = "fleetbench-run-" + std::to_string(o.run);
  for (auto& c : clusters) CreateNamespace(*c.client, ns);

  // kiln's controllers as kiln-operator wires them, on clients of their own
  // with the operator's rate limit.
  const kiln::kube::ClientOptions client_options{.qps = o.qps, .burst = o.burst};
  auto hub_config = Must(kiln::kube::LoadKubeconfig(hub->kubeconfig), hub->kubeconfig);
  auto operator_client = Must(kiln::kube::Client::New(hub_config, client_options), "hub");
  kiln::runtime::Manager manager(*operator_client,
                                 {.metrics_bind_address = "0", .health_probe_bind_address = "0"});
  auto fleet = Must(kiln::fleet::Fleet::Register(manager, *operator_client,
                                                 {.secret_namespace = kSystemNamespace,
                                                  .member_client_options = client_options}),
                    "fleet");
  auto jobs_informer = Must(manager.GetInformer(*operator_client, v1::kTrainingJobs), "informer");
  kiln::fleet::Fleet& f = *fleet;
  kiln::trainingjob::TrainingJobReconciler reconciler(
      *operator_client, f.members(), f.capacity(), &manager.events(),
      {.volume = {.claim_name = "", .host_path = "/tmp", .mount_path = "/kiln"}});
  manager.AddController("trainingjob", reconciler, {.workers = o.workers}).For(*jobs_informer);
  std::atomic<bool> stop{false};
  const auto t_start = Clock::now();
  auto run = std::async(std::launch::async, [&] { return manager.Run(stop); });

  // Every member connected with both caches synced (its MemberCluster's
  // status may still say Ready from an earlier operator).
  auto all_ready = [&] {
    for (auto& c : clusters) {
      auto member = f.members().Get(c.name);
      if (member == nullptr || !member->CachesSynced().ok()) return false;
    }
    return true;
  };
  while (!all_ready()) {
    if (Clock::now() - t_start > std::chrono::minutes(5)) {
      Die("members", kiln::Status::DeadlineExceeded("not all Ready in 5 minutes"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double members_ready_s = Seconds(Clock::now() - t_start);
  int64_t free_gpus = 0, nodes = 0;
  {
    const auto snapshot = f.capacity().Snapshot();
    for (const auto& [name, c] : snapshot.clusters()) {
      free_gpus += snapshot.ClusterCapacity(name).free_gpus;
      nodes += static_cast<int64_t>(c.nodes().size());
    }
  }

  std::mt19937 rng(static_cast<unsigned>(o.seed));
  std::vector<GangSpec> gangs;
  for (int i = 0; i < o.gangs; ++i) gangs.push_back(MakeGang(i, rng));

  const auto t0 = Clock::now();
  Observer obs(t0);
  auto pod_informers = WatchPods(clusters, ns, obs);
  kiln::kube::Informer job_watch(*hub->client, v1::kTrainingJobs, {.ns = ns});
  job_watch.AddHandlers(
      {.on_add = [&](const kiln::kube::Object& j) { obs.OnJob(*j); },
       .on_update = [&](const kiln::kube::Object&, const kiln::kube::Object& j) { obs.OnJob(*j); },
       .on_delete = nullptr});
  job_watch.Start();
  if (!job_watch.WaitForSync(std::chrono::seconds(60))) {
    Die("job informer", kiln::Status::DeadlineExceeded("not synced"));
  }

  std::mutex mu;
  std::map<std::string, double> created;
  const double t_create0 = obs.Now();
  Parallel(o.gangs, o.creators, [&](int i) {
    const GangSpec& g = gangs[static_cast<size_t>(i)];
    const double at = obs.Now();
    CreateOrKeep(*hub->client, v1::kTrainingJobs, ns, TrainingJob(g, ns));
    std::lock_guard<std::mutex> lock(mu);
    created[g.name] = at;
  });
  const double t_last_create = obs.Now() - t_create0;
  const bool finished = WaitProgress(o, obs, [&] {
    auto [decided, bound, pods] = obs.Progress();
    if (decided < o.gangs) return false;
    for (const auto& [n, j] : obs.jobs()) {
      if (j.placed && !j.all_bound) return false;
    }
    return true;
  });
  stop = true;
  const kiln::Status ran = run.get();
  job_watch.Stop();
  for (auto& inf : pod_informers) inf->Stop();

  // The plan for the anchor: per placed gang, its workers per cluster.
  json plan = json::array();
  for (const auto& g : gangs) {
    const auto jobs = obs.jobs();
    const auto j = jobs.find(g.name);
    if (j == jobs.end() || !j->second.placed) continue;
    json parts = json::array();
    for (const auto& c : j->second.placement) {
      parts.push_back({{"cluster", c["cluster"]}, {"workers", c["workers"]}});
    }
    plan.push_back({{"name", g.name},
                    {"gpus", g.gpus},
                    {"cpuMillis", g.cpu_millis},
                    {"memoryGi", g.memory_gi},
                    {"h200", g.h200},
                    {"parts", parts}});
  }
  if (!o.plan.empty()) {
    std::ofstream(o.plan) << plan.dump() << "\n";
  }

  json out = Figures(obs, t_last_create, created);
  out["mode"] = "kiln";
  out["machine"] = Machine();
  out["run"] = o.run;
  out["seed"] = o.seed;
  out["gangs"] = o.gangs;
  out["finished"] = finished;
  out["managerStatus"] = ran.ToString();
  out["membersReadySeconds"] = members_ready_s;
  out["nodesInSnapshot"] = nodes;
  out["freeGPUsBefore"] = free_gpus;
  out["reconcileWorkers"] = o.workers;
  out["clientQps"] = o.qps;
  out["clientBurst"] = o.burst;

  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);  // The figures stand even if the cleanup fails.
  // Clean up: the jobs' finalizers off (the controller is stopped), then the
  // namespace everywhere.
  Parallel(o.gangs, o.creators, [&](int i) {
    auto s = hub->client
                 ->Patch(v1::kTrainingJobs, ns, gangs[static_cast<size_t>(i)].name,
                         kiln::kube::PatchType::kMerge, R"({"metadata":{"finalizers":null}})")
                 .status();
    if (!s.ok() && !kiln::kube::IsNotFound(s)) Die("finalizer", s);
  });
  const auto t_clean = Clock::now();
  DeleteNamespace(clusters, ns, o.creators);
  std::fprintf(stderr, "fleet_bench: namespace %s deleted in %.1f s\n", ns.c_str(),
               Seconds(Clock::now() - t_clean));
  return 0;
}

// ---- anchor ----

int RunAnchor(const Options& o) {
  auto clusters = Connect(o.clusters);
  std::map<std::string, Cluster*> by_name;
  for (auto& c : clusters) by_name[c.name] = &c;
  std::ifstream in(o.plan);
  if (!in) Die("--plan", kiln::Status::NotFound(o.plan));
  json plan = json::parse(in);
  const std::string ns = "fleetbench-run-" + std::to_string(o.run);
  for (auto& c : clusters) CreateNamespace(*c.client, ns);

  const auto t0 = Clock::now();
  Observer obs(t0);
  auto pod_informers = WatchPods(clusters, ns, obs);
  std::mutex mu;
  std::map<std::string, double> created;
  const double t_create0 = obs.Now();
  Parallel(static_cast<int>(plan.size()), o.creators, [&](int i) {
    const json& g = plan[static_cast<size_t>(i)];
    const std::string name = g["name"];
    int workers = 0;
    for (const auto& part : g["parts"]) workers += part["workers"].get<int>();
    const double at = obs.Now();
    obs.Expect(name, workers);
    int rank = 0;
    for (const auto& part : g["parts"]) {
      Cluster* c = by_name.at(part["cluster"]);
      for (int w = 0; w < part["workers"].get<int>(); ++w, ++rank) {
        json pod_spec = {
            {"containers",
             json::array(
                 {{{"name", "worker"},
                   {"image", "ghcr.io/kiln-dev/kiln-worker:0.1.0"},
                   {"resources",
                    {{"requests",
                      {{"cpu", std::to_string(g["cpuMillis"].get<int64_t>()) + "m"},
                       {"memory", std::to_string(g["memoryGi"].get<int64_t>()) + "Gi"},
                       {"nvidia.com/gpu", std::to_string(g["gpus"].get<int>())}}},
                     {"limits", {{"nvidia.com/gpu", std::to_string(g["gpus"].get<int>())}}}}}}})},
            {"restartPolicy", "Never"}};
        if (g["h200"].get<bool>())
          pod_spec["nodeSelector"] = {{kiln::placement::kGpuProductLabel, kH200}};
        json pod = {{"apiVersion", "v1"},
                    {"kind", "Pod"},
                    {"metadata",
                     {{"name", name + "-" + std::to_string(rank)},
                      {"namespace", ns},
                      {"labels", {{kiln::trainingjob::kJobNameLabel, name}}}}},
                    {"spec", pod_spec}};
        CreateOrKeep(*c->client, kr::kPods, ns, pod);
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    created[name] = at;
  });
  const double t_last_create = obs.Now() - t_create0;
  const bool finished = WaitProgress(o, obs, [&] {
    for (const auto& [n, j] : obs.jobs()) {
      if (!j.all_bound) return false;
    }
    return true;
  });
  for (auto& inf : pod_informers) inf->Stop();
  json out = Figures(obs, t_last_create, created);
  out["mode"] = "anchor";
  out["machine"] = Machine();
  out["run"] = o.run;
  out["finished"] = finished;
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);  // The figures stand even if the cleanup fails.
  const auto t_clean = Clock::now();
  DeleteNamespace(clusters, ns, o.creators);
  std::fprintf(stderr, "fleet_bench: namespace %s deleted in %.1f s\n", ns.c_str(),
               Seconds(Clock::now() - t_clean));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string synopsis =
      "Usage: fleet_bench setup|kiln|anchor --clusters NAME=KUBECONFIG,... [flags]\n"
      "The driver of bench/fleet_bench.sh (see bench/README.md).";
  if (argc < 2) {
    std::fprintf(stderr, "%s\n", synopsis.c_str());
    return kiln::kUsageExitCode;
  }
  const std::string mode = argv[1];
  Options o;
  kiln::FlagSet flags("fleet_bench " + mode, synopsis);
  flags.String("clusters", &o.clusters, "NAME=KUBECONFIG,... of every member cluster");
  flags.String("hub", &o.hub, "the cluster holding the MemberClusters and TrainingJobs");
  flags.Int("pods", &o.pods, 0, 10000000, "setup: filler pods (1 GPU each)");
  flags.Int("gangs", &o.gangs, 1, 100000, "kiln: gangs to create");
  flags.Int("seed", &o.seed, 0, 1 << 30, "seed of the node conditions, filler and gangs");
  flags.Int("run", &o.run, 0, 1000000, "run number: the namespace fleetbench-run-N");
  flags.String("plan", &o.plan, "kiln: where to write what was placed; anchor: what to create");
  flags.Int("workers", &o.workers, 1, 256, "kiln: TrainingJob reconcile workers");
  flags.Double("kube-api-qps", &o.qps, 0, 1e9, "kiln: the controllers' client rate limit; 0: none");
  flags.Int("kube-api-burst", &o.burst, 1, 1000000, "kiln: the rate limit's burst");
  flags.Int("creators", &o.creators, 1, 256, "threads creating objects");
  flags.Int("timeout", &o.timeout_s, 1, 86400, "seconds a run may take at most");
  flags.Int("stall", &o.stall_s, 1, 86400, "seconds without progress that end a run");
  if (auto exit_code = flags.ParseOrExit(argc, argv, 2)) return *exit_code;
  if (mode == "setup") return Setup(o);
  if (mode == "kiln") return RunKiln(o);
  if (mode == "anchor") return RunAnchor(o);
  return flags.UsageError("unknown mode " + mode);
}
