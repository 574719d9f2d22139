// The restricted Pod Security Standard, as a test checks a pod kiln makes
// against it without an API server (the integration tests run such pods in
// namespaces that enforce it).
#ifndef KILN_TESTS_SUPPORT_POD_SECURITY_H_
#define KILN_TESTS_SUPPORT_POD_SECURITY_H_

#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kiln::testing {

// What the restricted Pod Security Standard refuses in `pod` (a PodSpec),
// in words; empty when it admits it. The rules of
// https://kubernetes.io/docs/concepts/security/pod-security-standards/
// (restricted, latest) that a kiln-made pod could break.
inline std::vector<std::string> RestrictedViolations(const nlohmann::json& pod) {
  using nlohmann::json;
  std::vector<std::string> out;
  const json psc = pod.value("securityContext", json::object());
  for (const auto& v : pod.value("volumes", json::array())) {
    bool allowed = false;
    for (const char* kind : {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                             "persistentVolumeClaim", "projected", "secret"}) {
      allowed = allowed || v.contains(kind);
    }
    if (!allowed) out.push_back("volume " + v.value("name", "") + " of a refused kind");
  }
  for (const char* field : {"hostNetwork", "hostPID", "hostIPC"}) {
    if (pod.value(field, false)) out.push_back(field);
  }
  for (const char* list : {"initContainers", "containers"}) {
    for (const auto& c : pod.value(list, json::array())) {
      const std::string name = c.value("name", "");
      const json sc = c.value("securityContext", json::object());
      if (sc.value("allowPrivilegeEscalation", true)) {
        out.push_back(name + ": allowPrivilegeEscalation not false");
      }
      if (sc.value("privileged", false)) out.push_back(name + ": privileged");
      const json drop = sc.value("capabilities", json::object()).value("drop", json::array());
      if (std::find(drop.begin(), drop.end(), "ALL") == drop.end()) {
        out.push_back(name + ": capabilities not dropping ALL");
      }
      const json add = sc.value("capabilities", json::object()).value("add", json::array());
      for (const auto& a : add) {
        if (a != "NET_BIND_SERVICE") out.push_back(name + ": adds " + a.get<std::string>());
      }
      if (!sc.value("runAsNonRoot", psc.value("runAsNonRoot", false))) {
        out.push_back(name + ": runAsNonRoot not true");
      }
      if (sc.value("runAsUser", psc.value("runAsUser", 1)) == 0) out.push_back(name + ": uid 0");
      const std::string seccomp =
          sc.value("seccompProfile", psc.value("seccompProfile", json::object())).value("type", "");
      if (seccomp != "RuntimeDefault" && seccomp != "Localhost") {
        out.push_back(name + ": no RuntimeDefault seccomp profile");
      }
      for (const auto& p : c.value("ports", json::array())) {
        if (p.contains("hostPort")) out.push_back(name + ": hostPort");
      }
      // Not a restricted rule, but kiln's promise (docs/reliability.md).
      if (!sc.value("readOnlyRootFilesystem", false)) {
        out.push_back(name + ": root filesystem writable");
      }
    }
  }
  return out;
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_POD_SECURITY_H_
