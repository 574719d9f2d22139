// Resource: which REST collection an object lives in (group, version, plural
// resource name, scope), and the paths the API serves it under. A plain value.
#ifndef KILN_KUBE_RESOURCE_H_
#define KILN_KUBE_RESOURCE_H_

#include <string>

namespace kiln::kube {

struct Resource {
  std::string group;     // "" for the core group.
  std::string version;   // "v1"
  std::string resource;  // Plural, lower case: "pods".
  std::string kind;      // "Pod"
  bool namespaced = true;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }

  // "/api/v1/namespaces/ns/pods/name/status"; omits what is empty. For
  // cluster-scoped resources `ns` is ignored; for namespaced ones an empty `ns`
  // means all namespaces (lists and watches only).
  std::string Path(const std::string& ns = "", const std::string& name = "",
                   const std::string& subresource = "") const {
    std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
    if (namespaced && !ns.empty()) p += "/namespaces/" + ns;
    p += "/" + resource;
    if (!name.empty()) p += "/" + name;
    if (!subresource.empty()) p += "/" + subresource;
    return p;
  }
};

// Resources kiln's controllers use.
namespace resources {
inline const Resource kPods{"", "v1", "pods", "Pod", true};
inline const Resource kNodes{"", "v1", "nodes", "Node", false};
inline const Resource kNamespaces{"", "v1", "namespaces", "Namespace", false};
inline const Resource kConfigMaps{"", "v1", "configmaps", "ConfigMap", true};
inline const Resource kSecrets{"", "v1", "secrets", "Secret", true};
inline const Resource kServices{"", "v1", "services", "Service", true};
inline const Resource kEvents{"", "v1", "events", "Event", true};
inline const Resource kLeases{"coordination.k8s.io", "v1", "leases", "Lease", true};
inline const Resource kDeployments{"apps", "v1", "deployments", "Deployment", true};
inline const Resource kEndpointSlices{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice",
                                      true};
inline const Resource kCustomResourceDefinitions{
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false};
}  // namespace resources

}  // namespace kiln::kube

#endif  // KILN_KUBE_RESOURCE_H_
