#include "tests/support/local_clusters.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kube/kubeconfig.h"

namespace kiln::testing {

StatusOr<LocalClusters> LocalClusters::FromEnvironment() {
  const char* dir = std::getenv("KILN_LOCALCLUSTER_DIR");
  if (dir == nullptr || *dir == '\0') {
    return Status::FailedPrecondition(
        "KILN_LOCALCLUSTER_DIR is not set: run integration tests through ctest, which starts the "
        "local clusters as a fixture");
  }
  std::ifstream in(std::string(dir) + "/state.json");
  if (!in) return Status::FailedPrecondition(std::string("no state.json in ") + dir);
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    auto state = nlohmann::json::parse(buf.str());
    if (state.at("phase") != "ready") {
      return Status::FailedPrecondition("local clusters in " + std::string(dir) + " are " +
                                        state.at("phase").get<std::string>() + ": " +
                                        state.value("error", std::string()));
    }
    const auto& spec = state.at("spec");
    LocalClusters out;
    out.run_dir_ = dir;
    out.bin_dir_ = spec.at("bin_dir").get<std::string>();
    out.nodes_per_cluster_ = spec.at("nodes").get<int>();
    out.gpus_per_node_ = spec.at("gpus_per_node").get<int>();
    for (const auto& c : spec.at("clusters")) {
      out.clusters_.push_back(
          {c.at("name").get<std::string>(), c.at("dir").get<std::string>() + "/kubeconfig",
           "https://127.0.0.1:" + std::to_string(c.at("ports").at("apiserver").get<int>()),
           c.at("dir").get<std::string>() + "/pki",
           "http://127.0.0.1:" + std::to_string(c.at("ports").at("etcd").get<int>())});
    }
    return out;
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss(std::string("malformed state.json in ") + dir + ": " + e.what());
  }
}

StatusOr<std::unique_ptr<kube::Client>> LocalClusters::Client(const LocalCluster& cluster) const {
  KILN_ASSIGN_OR_RETURN(kube::RestConfig config, kube::LoadKubeconfig(cluster.kubeconfig));
  return kube::Client::New(std::move(config));
}

Status LocalClusters::Restart(const LocalCluster& cluster, const std::string& component,
                              double down_seconds) const {
  KILN_ASSIGN_OR_RETURN(
      ProcessResult r,
      RunProcess({.argv = {"python3", std::string(KILN_SOURCE_DIR) + "/scripts/localcluster.py",
                           "restart", "--dir", run_dir_, "--cluster", cluster.name, "--component",
                           component, "--down-seconds", std::to_string(down_seconds)},
                  .timeout = std::chrono::seconds(240)}));
  if (r.exit_code != 0) return Status::Internal("restart " + component + ": " + r.stderr_data);
  return Status::Ok();
}

StatusOr<ProcessResult> LocalClusters::Etcdctl(const LocalCluster& cluster,
                                               std::vector<std::string> args) const {
  args.insert(args.begin(), {bin_dir_ + "/etcdctl", "--endpoints", cluster.etcd_endpoint});
  return RunProcess({.argv = std::move(args), .timeout = std::chrono::seconds(60)});
}

StatusOr<ProcessResult> LocalClusters::Kubectl(const LocalCluster& cluster,
                                               std::vector<std::string> args,
                                               std::string stdin_data) const {
  args.insert(args.begin(), {bin_dir_ + "/kubectl", "--kubeconfig", cluster.kubeconfig});
  return RunProcess({.argv = std::move(args),
                     .stdin_data = std::move(stdin_data),
                     .timeout = std::chrono::seconds(60)});
}

Status LocalClusters::ApplyCrd(const LocalCluster& cluster, const std::string& file,
                               const std::string& name) const {
  auto applied = Kubectl(cluster, {"apply", "--server-side", "-f", file});
  if (!applied.ok()) return applied.status();
  if (applied->exit_code != 0) {
    return Status::Internal("kubectl apply -f " + file + ": " + applied->stderr_data);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto got =
        Kubectl(cluster, {"get", "crd", name, "-o",
                          "jsonpath={.status.conditions[?(@.type==\"Established\")].status}"});
    if (!got.ok()) return got.status();
    if (got->exit_code == 0 && got->stdout_data == "True") return Status::Ok();
    last = got->stdout_data + got->stderr_data;
    usleep(100 * 1000);
  }
  return Status::DeadlineExceeded("CRD " + name + " not Established after 60 s: " + last);
}

std::string UniqueName(const std::string& prefix) {
  static int counter = 0;
  return prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
}

}  // namespace kiln::testing
