// LocalClusters: a test's handle on the clusters scripts/localcluster.py started
// as the CTest fixture. Reads the run directory named by $KILN_LOCALCLUSTER_DIR.
// Thread-compatible: const methods may be called concurrently.
#ifndef KILN_TESTS_SUPPORT_LOCAL_CLUSTERS_H_
#define KILN_TESTS_SUPPORT_LOCAL_CLUSTERS_H_

#include <string>
#include <vector>

#include "base/statusor.h"
#include "base/subprocess.h"
#include "kube/client.h"

namespace kiln::testing {

struct LocalCluster {
  std::string name;
  std::string kubeconfig;     // Admin (system:masters) kubeconfig for this cluster alone.
  std::string server;         // https://127.0.0.1:<port>
  std::string pki_dir;        // ca.crt, ca.key and the components' certificates.
  std::string etcd_endpoint;  // http://127.0.0.1:<port>
};

class LocalClusters {
 public:
  // Loads the fixture's state. FailedPrecondition when the fixture is not ready.
  static StatusOr<LocalClusters> FromEnvironment();

  const std::vector<LocalCluster>& clusters() const { return clusters_; }
  const std::string& run_dir() const { return run_dir_; }
  const std::string& bin_dir() const { return bin_dir_; }
  int nodes_per_cluster() const { return nodes_per_cluster_; }
  int gpus_per_node() const { return gpus_per_node_; }

  // A kiln client for `cluster` from its admin kubeconfig.
  StatusOr<std::unique_ptr<kube::Client>> Client(const LocalCluster& cluster) const;

  // Restarts one component (e.g. "kube-apiserver") of `cluster`, keeping it
  // down for `down_seconds`, and waits until it is healthy again.
  Status Restart(const LocalCluster& cluster, const std::string& component,
                 double down_seconds) const;

  // Runs the pinned etcdctl against `cluster`'s etcd.
  StatusOr<ProcessResult> Etcdctl(const LocalCluster& cluster, std::vector<std::string> args) const;

  // Runs the pinned kubectl against `cluster` with `args`, feeding `stdin_data`.
  StatusOr<ProcessResult> Kubectl(const LocalCluster& cluster, std::vector<std::string> args,
                                  std::string stdin_data = "") const;

  // Applies the CRD manifest `file` to `cluster` (server-side) and waits up
  // to a minute until the CRD `name` (plural.group) is Established. Polls
  // itself: `kubectl wait` fails at once on a CRD whose status has no
  // conditions yet, as one just created may.
  Status ApplyCrd(const LocalCluster& cluster, const std::string& file,
                  const std::string& name) const;

 private:
  std::string run_dir_;
  std::string bin_dir_;
  int nodes_per_cluster_ = 0;
  int gpus_per_node_ = 0;
  std::vector<LocalCluster> clusters_;
};

// A name unique to this process, for namespaces that tests create.
std::string UniqueName(const std::string& prefix);

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_LOCAL_CLUSTERS_H_
