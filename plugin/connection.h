// Connection: the API server kubectl would talk to for the same flags and
// environment — --kubeconfig (one file), else $KUBECONFIG (a ':'-separated
// list, merged as kubectl merges it), else ~/.kube/config, else the pod's
// service account — and the namespace (-n, else the context's, else
// "default"). Stateless functions; thread-safe.
#ifndef KILN_PLUGIN_CONNECTION_H_
#define KILN_PLUGIN_CONNECTION_H_

#include <string>
#include <vector>

#include "base/statusor.h"
#include "kube/rest_config.h"
#include "plugin/command_line.h"

namespace kiln::plugin {

// What the process sees of its environment; tests fill it by hand.
struct Environment {
  std::string kubeconfig;   // $KUBECONFIG.
  std::string home;         // $HOME.
  bool in_cluster = false;  // $KUBERNETES_SERVICE_HOST is set.

  static Environment FromProcess();
};

// The kubeconfig files to merge for `cl` in `env`, in order; empty when
// none applies (then the in-cluster config, if any).
std::vector<std::string> KubeconfigPaths(const CommandLine& cl, const Environment& env);

// Loads the configuration. The error says where it looked.
StatusOr<kube::RestConfig> LoadConfig(const CommandLine& cl, const Environment& env);

// The namespace the command works in: -n, else the context's.
std::string Namespace(const CommandLine& cl, const kube::RestConfig& config);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_CONNECTION_H_
