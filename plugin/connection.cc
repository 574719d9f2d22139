#include "plugin/connection.h"

#include <cstdlib>
#include <filesystem>

#include "kube/kubeconfig.h"

namespace kiln::plugin {

Environment Environment::FromProcess() {
  Environment env;
  if (const char* k = std::getenv("KUBECONFIG"); k != nullptr) env.kubeconfig = k;
  if (const char* h = std::getenv("HOME"); h != nullptr) env.home = h;
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  env.in_cluster = host != nullptr && *host != '\0';
  return env;
}

std::vector<std::string> KubeconfigPaths(const CommandLine& cl, const Environment& env) {
  if (!cl.kubeconfig.empty()) return {cl.kubeconfig};
  std::vector<std::string> paths;
  size_t start = 0;
  while (start <= env.kubeconfig.size() && !env.kubeconfig.empty()) {
    size_t end = env.kubeconfig.find(':', start);
    if (end == std::string::npos) end = env.kubeconfig.size();
    if (end > start) paths.push_back(env.kubeconfig.substr(start, end - start));
    start = end + 1;
  }
  if (!paths.empty()) return paths;
  if (!env.home.empty()) {
    const std::string home_config = env.home + "/.kube/config";
    if (!env.in_cluster || std::filesystem::exists(home_config)) return {home_config};
  }
  return {};
}

StatusOr<kube::RestConfig> LoadConfig(const CommandLine& cl, const Environment& env) {
  const std::vector<std::string> paths = KubeconfigPaths(cl, env);
  if (paths.empty()) {
    if (!env.in_cluster) {
      return Status::FailedPrecondition(
          "no kubeconfig: give --kubeconfig, set KUBECONFIG, or create ~/.kube/config");
    }
    KILN_ASSIGN_OR_RETURN(kube::RestConfig config, kube::InClusterConfig());
    if (!cl.context.empty()) {
      return Status::InvalidArgument("--context " + cl.context +
                                     ": there is no kubeconfig, only the pod's service account");
    }
    return config;
  }
  return kube::LoadMergedKubeconfig(paths, cl.context);
}

std::string Namespace(const CommandLine& cl, const kube::RestConfig& config) {
  if (!cl.ns.empty()) return cl.ns;
  return config.default_namespace.empty() ? "default" : config.default_namespace;
}

}  // namespace kiln::plugin
