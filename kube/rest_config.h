// RestConfig: everything needed to reach and authenticate to one Kubernetes API
// server — the C++ counterpart of client-go's rest.Config. A plain value; copy
// freely. Credentials are held in memory as PEM or token text.
#ifndef KILN_KUBE_REST_CONFIG_H_
#define KILN_KUBE_REST_CONFIG_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kiln::kube {

// A client-go exec credential plugin (kubeconfig users[].user.exec).
struct ExecConfig {
  std::string command;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  std::string api_version;  // client.authentication.k8s.io/v1 or v1beta1
  std::string install_hint;
  bool provide_cluster_info = false;
};

struct RestConfig {
  std::string server;                     // https://host:port, no trailing slash.
  std::string tls_server_name;            // Overrides the name checked in the server's certificate.
  std::string ca_pem;                     // Trusted CAs; empty means the system roots.
  bool insecure_skip_tls_verify = false;  // Only when the kubeconfig sets it explicitly.

  std::string client_cert_pem;
  std::string client_key_pem;
  std::string bearer_token;
  // Read afresh before use, so rotated tokens (service accounts) are picked up.
  std::string bearer_token_file;
  std::optional<ExecConfig> exec;

  std::string context;  // The kubeconfig context this came from, if any.
  std::string default_namespace = "default";
  std::string source;  // Where it was loaded from, for error messages.
  // What to check when the TLS handshake fails, for its error message.
  std::string tls_hint = "check the kubeconfig's certificate-authority and client certificate";
};

}  // namespace kiln::kube

#endif  // KILN_KUBE_REST_CONFIG_H_
