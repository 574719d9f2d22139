#include "kube/kubeconfig.h"

#include <cstdlib>
#include <filesystem>
#include <set>

#include <yaml-cpp/yaml.h>

#include "base/base64.h"
#include "base/file.h"

namespace kiln::kube {
namespace {

// Field access on one kubeconfig, with errors naming the source and the field.
class Reader {
 public:
  Reader(std::string source, std::string base_dir)
      : source_(std::move(source)), base_dir_(std::move(base_dir)) {}

  Status Error(const std::string& field, const std::string& what) const {
    return Status::InvalidArgument("kubeconfig " + source_ + ": " + field + ": " + what);
  }

  // The string at node[key], empty when absent. Errors for non-scalars.
  StatusOr<std::string> String(const YAML::Node& node, const std::string& key,
                               const std::string& field) const {
    YAML::Node v = node[key];
    if (!v || v.IsNull()) return std::string();
    if (!v.IsScalar()) return Error(field + "." + key, "must be a string");
    return v.as<std::string>();
  }

  StatusOr<bool> Bool(const YAML::Node& node, const std::string& key,
                      const std::string& field) const {
    YAML::Node v = node[key];
    if (!v || v.IsNull()) return false;
    bool out = false;
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, out)) {
      return Error(field + "." + key, "must be true or false");
    }
    return out;
  }

  // Finds the entry called `name` in the named list (clusters, users, contexts)
  // and returns its `inner` map (cluster, user, context).
  StatusOr<YAML::Node> Named(const YAML::Node& root, const std::string& list,
                             const std::string& inner, const std::string& name) const {
    YAML::Node entries = root[list];
    if (entries && !entries.IsNull() && !entries.IsSequence()) {
      return Error(list, "must be a list");
    }
    std::string available;
    for (const auto& entry : entries) {
      if (!entry.IsMap() || !entry["name"] || !entry["name"].IsScalar()) {
        return Error(list, "every entry needs a name");
      }
      std::string entry_name = entry["name"].as<std::string>();
      if (entry_name == name) {
        YAML::Node body = entry[inner];
        if (!body || !body.IsMap()) {
          return Error(list + "[name=" + name + "]." + inner, "missing or not a map");
        }
        return body;
      }
      available += (available.empty() ? "" : ", ") + entry_name;
    }
    return Status::NotFound("kubeconfig " + source_ + ": " + inner + " \"" + name +
                            "\" not found in " + list +
                            (available.empty() ? " (none defined)" : " (have: " + available + ")"));
  }

  // Inline *-data (base64) or a file reference; at most one of the two.
  StatusOr<std::string> DataOrFile(const YAML::Node& node, const std::string& file_key,
                                   const std::string& field) const {
    KILN_ASSIGN_OR_RETURN(std::string data, String(node, file_key + "-data", field));
    KILN_ASSIGN_OR_RETURN(std::string file, String(node, file_key, field));
    if (!data.empty() && !file.empty()) {
      return Error(field, "both " + file_key + " and " + file_key + "-data are set; use one");
    }
    if (!data.empty()) {
      auto decoded = Base64Decode(data);
      if (!decoded.ok()) return Error(field + "." + file_key + "-data", decoded.status().message());
      return *decoded;
    }
    if (file.empty()) return std::string();
    auto content = ReadFile(Resolve(file));
    if (!content.ok()) {
      return Status(content.status().code(), "kubeconfig " + source_ + ": " + field + "." +
                                                 file_key + ": " + content.status().message());
    }
    return *content;
  }

  std::string Resolve(const std::string& path) const {
    if (path.empty() || path[0] == '/' || base_dir_.empty()) return path;
    return (std::filesystem::path(base_dir_) / path).string();
  }

 private:
  std::string source_;
  std::string base_dir_;
};

Status ParseExec(const Reader& r, const YAML::Node& exec, const std::string& field,
                 ExecConfig& out) {
  KILN_ASSIGN_OR_RETURN(out.command, r.String(exec, "command", field));
  if (out.command.empty()) return r.Error(field + ".command", "required");
  KILN_ASSIGN_OR_RETURN(out.api_version, r.String(exec, "apiVersion", field));
  if (out.api_version != "client.authentication.k8s.io/v1" &&
      out.api_version != "client.authentication.k8s.io/v1beta1") {
    return r.Error(
        field + ".apiVersion",
        "must be client.authentication.k8s.io/v1 or v1beta1, got \"" + out.api_version + "\"");
  }
  KILN_ASSIGN_OR_RETURN(out.install_hint, r.String(exec, "installHint", field));
  KILN_ASSIGN_OR_RETURN(out.provide_cluster_info, r.Bool(exec, "provideClusterInfo", field));
  YAML::Node args = exec["args"];
  if (args && !args.IsNull()) {
    if (!args.IsSequence()) return r.Error(field + ".args", "must be a list of strings");
    for (const auto& a : args) {
      if (!a.IsScalar()) return r.Error(field + ".args", "must be a list of strings");
      out.args.push_back(a.as<std::string>());
    }
  }
  YAML::Node env = exec["env"];
  if (env && !env.IsNull()) {
    if (!env.IsSequence()) return r.Error(field + ".env", "must be a list of {name, value}");
    for (const auto& e : env) {
      if (!e.IsMap() || !e["name"] || !e["name"].IsScalar()) {
        return r.Error(field + ".env", "every entry needs a name");
      }
      KILN_ASSIGN_OR_RETURN(std::string value, r.String(e, "value", field + ".env"));
      out.env[e["name"].as<std::string>()] = value;
    }
  }
  return Status::Ok();
}

StatusOr<RestConfig> Parse(const YAML::Node& root, const Reader& r, std::string context,
                           const std::string& source) {
  if (!root.IsMap()) return r.Error("(document)", "must be a YAML map");
  if (context.empty()) {
    KILN_ASSIGN_OR_RETURN(context, r.String(root, "current-context", ""));
    if (context.empty()) {
      return r.Error("current-context", "empty, and no context was given explicitly");
    }
  }
  KILN_ASSIGN_OR_RETURN(YAML::Node ctx, r.Named(root, "contexts", "context", context));
  const std::string ctx_field = "contexts[name=" + context + "].context";
  KILN_ASSIGN_OR_RETURN(std::string cluster_name, r.String(ctx, "cluster", ctx_field));
  KILN_ASSIGN_OR_RETURN(std::string user_name, r.String(ctx, "user", ctx_field));
  if (cluster_name.empty()) return r.Error(ctx_field + ".cluster", "required");

  RestConfig cfg;
  cfg.context = context;
  cfg.source = source;
  KILN_ASSIGN_OR_RETURN(std::string ns, r.String(ctx, "namespace", ctx_field));
  if (!ns.empty()) cfg.default_namespace = ns;

  KILN_ASSIGN_OR_RETURN(YAML::Node cluster, r.Named(root, "clusters", "cluster", cluster_name));
  const std::string cl_field = "clusters[name=" + cluster_name + "].cluster";
  KILN_ASSIGN_OR_RETURN(cfg.server, r.String(cluster, "server", cl_field));
  if (cfg.server.empty()) return r.Error(cl_field + ".server", "required");
  if (cfg.server.rfind("https://", 0) != 0 && cfg.server.rfind("http://", 0) != 0) {
    return r.Error(cl_field + ".server", "must be an http(s):// URL, got \"" + cfg.server + "\"");
  }
  while (cfg.server.size() > 8 && cfg.server.back() == '/') cfg.server.pop_back();
  KILN_ASSIGN_OR_RETURN(cfg.tls_server_name, r.String(cluster, "tls-server-name", cl_field));
  KILN_ASSIGN_OR_RETURN(cfg.insecure_skip_tls_verify,
                        r.Bool(cluster, "insecure-skip-tls-verify", cl_field));
  KILN_ASSIGN_OR_RETURN(cfg.ca_pem, r.DataOrFile(cluster, "certificate-authority", cl_field));
  if (cfg.insecure_skip_tls_verify && !cfg.ca_pem.empty()) {
    return r.Error(cl_field,
                   "insecure-skip-tls-verify cannot be combined with a certificate authority");
  }

  if (user_name.empty()) return cfg;  // Anonymous.
  KILN_ASSIGN_OR_RETURN(YAML::Node user, r.Named(root, "users", "user", user_name));
  const std::string u_field = "users[name=" + user_name + "].user";
  for (const char* unsupported : {"username", "password", "auth-provider"}) {
    if (user[unsupported]) {
      return r.Error(u_field + "." + unsupported,
                     "not supported (removed from Kubernetes); use client certificates, a token "
                     "or an exec plugin");
    }
  }
  KILN_ASSIGN_OR_RETURN(cfg.client_cert_pem, r.DataOrFile(user, "client-certificate", u_field));
  KILN_ASSIGN_OR_RETURN(cfg.client_key_pem, r.DataOrFile(user, "client-key", u_field));
  if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty()) {
    return r.Error(u_field, "client-certificate and client-key must be given together");
  }
  KILN_ASSIGN_OR_RETURN(cfg.bearer_token, r.String(user, "token", u_field));
  KILN_ASSIGN_OR_RETURN(std::string token_file, r.String(user, "tokenFile", u_field));
  if (!token_file.empty()) cfg.bearer_token_file = r.Resolve(token_file);
  YAML::Node exec = user["exec"];
  if (exec && !exec.IsNull()) {
    if (!exec.IsMap()) return r.Error(u_field + ".exec", "must be a map");
    ExecConfig e;
    KILN_RETURN_IF_ERROR(ParseExec(r, exec, u_field + ".exec", e));
    cfg.exec = std::move(e);
  }
  return cfg;
}

}  // namespace

StatusOr<RestConfig> ParseKubeconfig(const std::string& yaml_text, const std::string& base_dir,
                                     const std::string& context, const std::string& source) {
  Reader r(source, base_dir);
  try {
    return Parse(YAML::Load(yaml_text), r, context, source);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("kubeconfig " + source + ": malformed YAML at line " +
                                   std::to_string(e.mark.line + 1) + ", column " +
                                   std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

StatusOr<RestConfig> LoadKubeconfig(const std::string& path, const std::string& context) {
  KILN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseKubeconfig(text, std::filesystem::path(path).parent_path().string(), context, path);
}

namespace {

// Rewrites the relative file references of one file's clusters and users to
// absolute paths under `base_dir`, so they survive the merge.
void ResolveFileReferences(YAML::Node root, const std::string& base_dir) {
  const std::pair<const char*, std::vector<const char*>> lists[] = {
      {"clusters", {"certificate-authority"}},
      {"users", {"client-certificate", "client-key", "tokenFile"}}};
  for (const auto& [list, keys] : lists) {
    YAML::Node entries = root[list];
    if (!entries || !entries.IsSequence()) continue;
    for (YAML::Node entry : entries) {
      YAML::Node body = entry.IsMap() ? entry[list == std::string("clusters") ? "cluster" : "user"]
                                      : YAML::Node();
      if (!body || !body.IsMap()) continue;
      for (const char* key : keys) {
        YAML::Node v = body[key];
        if (!v || !v.IsScalar()) continue;
        const std::string path = v.as<std::string>();
        if (!path.empty() && path[0] != '/') {
          body[key] = (std::filesystem::path(base_dir) / path).string();
        }
      }
    }
  }
}

}  // namespace

StatusOr<RestConfig> LoadMergedKubeconfig(const std::vector<std::string>& paths,
                                          const std::string& context) {
  if (paths.size() == 1) return LoadKubeconfig(paths[0], context);
  YAML::Node merged(YAML::NodeType::Map);
  std::string current_context, sources;
  std::set<std::string> seen[3];
  const char* lists[3] = {"clusters", "users", "contexts"};
  for (const auto& path : paths) {
    if (path.empty() || !std::filesystem::exists(path)) continue;
    KILN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return Status::InvalidArgument("kubeconfig " + path + ": malformed YAML at line " +
                                     std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    sources += (sources.empty() ? "" : ":") + path;
    if (root.IsNull()) continue;
    if (!root.IsMap()) {
      return Status::InvalidArgument("kubeconfig " + path + ": (document): must be a YAML map");
    }
    ResolveFileReferences(root, std::filesystem::path(path).parent_path().string());
    if (current_context.empty() && root["current-context"] && root["current-context"].IsScalar()) {
      current_context = root["current-context"].as<std::string>();
    }
    for (int i = 0; i < 3; ++i) {
      YAML::Node entries = root[lists[i]];
      if (!entries || !entries.IsSequence()) continue;
      for (const auto& entry : entries) {
        if (!entry.IsMap() || !entry["name"] || !entry["name"].IsScalar()) continue;
        if (seen[i].insert(entry["name"].as<std::string>()).second)
          merged[lists[i]].push_back(entry);
      }
    }
  }
  if (sources.empty()) {
    std::string listed;
    for (const auto& p : paths) listed += (listed.empty() ? "" : ":") + p;
    return Status::NotFound("kubeconfig: none of " + listed + " exists");
  }
  if (!current_context.empty()) merged["current-context"] = current_context;
  Reader r(sources, "");
  try {
    return Parse(merged, r, context, sources);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("kubeconfig " + sources + ": " + e.msg);
  }
}

StatusOr<std::vector<std::string>> KubeconfigContexts(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    std::vector<std::string> names;
    for (const auto& c : YAML::Load(text)["contexts"]) {
      if (c["name"] && c["name"].IsScalar()) names.push_back(c["name"].as<std::string>());
    }
    return names;
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("kubeconfig " + path + ": malformed YAML: " + e.msg);
  }
}

StatusOr<RestConfig> InClusterConfig(const InClusterPaths& paths) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0' || *port == '\0') {
    return Status::FailedPrecondition(
        "not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set");
  }
  RestConfig cfg;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6 literal.
  cfg.server = "https://" + h + ":" + port;
  cfg.source = "in-cluster service account";
  KILN_ASSIGN_OR_RETURN(cfg.ca_pem, ReadFile(paths.ca_file));
  // Checked now so a missing mount fails at start-up, then re-read on each use.
  KILN_RETURN_IF_ERROR(ReadFile(paths.token_file).status());
  cfg.bearer_token_file = paths.token_file;
  auto ns = ReadFile(paths.namespace_file);
  if (ns.ok() && !ns->empty()) {
    std::string trimmed = *ns;
    while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' '))
      trimmed.pop_back();
    cfg.default_namespace = trimmed;
  }
  return cfg;
}

}  // namespace kiln::kube
