// Loading RestConfigs from kubeconfig files and from a pod's service account.
// Stateless functions; thread-safe.
#ifndef KILN_KUBE_KUBECONFIG_H_
#define KILN_KUBE_KUBECONFIG_H_

#include <string>
#include <vector>

#include "base/statusor.h"
#include "kube/rest_config.h"

namespace kiln::kube {

// Loads `context` (the file's current-context when empty) from the kubeconfig
// at `path`. Relative file references resolve against the file's folder, as in
// client-go. Errors name the file and the field: InvalidArgument for malformed
// YAML or missing/contradictory fields, NotFound for an unknown context,
// cluster or user, or an unreadable referenced file.
StatusOr<RestConfig> LoadKubeconfig(const std::string& path, const std::string& context = "");

// The same, from kubeconfig text; `base_dir` resolves relative paths and
// `source` names the text in errors.
StatusOr<RestConfig> ParseKubeconfig(const std::string& yaml_text, const std::string& base_dir,
                                     const std::string& context, const std::string& source);

// Loads `context` (the merged current-context when empty) from several
// kubeconfig files merged as kubectl merges $KUBECONFIG's list: the first
// file that sets current-context, or defines a context, cluster or user of a
// name, wins; a relative file reference resolves against the folder of the
// file it is in; files that do not exist are skipped (NotFound when none
// does). One path behaves as LoadKubeconfig.
StatusOr<RestConfig> LoadMergedKubeconfig(const std::vector<std::string>& paths,
                                          const std::string& context = "");

// The contexts a kubeconfig defines, in file order.
StatusOr<std::vector<std::string>> KubeconfigContexts(const std::string& path);

// Where a pod finds its service-account credentials and API server.
struct InClusterPaths {
  std::string token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::string namespace_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
};

// Config for a process running in a pod: KUBERNETES_SERVICE_HOST/PORT from the
// environment, the CA and namespace from `paths`, and the token file (re-read
// on use, as the kubelet rotates it). FailedPrecondition outside a pod.
StatusOr<RestConfig> InClusterConfig(const InClusterPaths& paths = {});

}  // namespace kiln::kube

#endif  // KILN_KUBE_KUBECONFIG_H_
