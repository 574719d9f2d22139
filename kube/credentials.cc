#include "kube/credentials.h"

#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "base/file.h"
#include "base/subprocess.h"
#include "base/time_format.h"

namespace kiln::kube {
namespace {

// Refresh exec credentials this long before they expire.
constexpr auto kExpirySlack = std::chrono::seconds(30);

// Surrounding whitespace, as client-go's strings.TrimSpace: a token file
// written by hand often ends (or starts) with some.
std::string Trim(const std::string& s) {
  const char* space = " \t\r\n";
  const size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

}  // namespace

StatusOr<ExecCredential> RunExecPlugin(const ExecConfig& exec, const RestConfig& config) {
  nlohmann::json info = {{"apiVersion", exec.api_version},
                         {"kind", "ExecCredential"},
                         {"spec", {{"interactive", false}}}};
  if (exec.provide_cluster_info) {
    info["spec"]["cluster"] = {{"server", config.server},
                               {"certificate-authority-data", Base64Encode(config.ca_pem)},
                               {"insecure-skip-tls-verify", config.insecure_skip_tls_verify}};
    if (!config.tls_server_name.empty()) {
      info["spec"]["cluster"]["tls-server-name"] = config.tls_server_name;
    }
  }
  std::map<std::string, std::string> env = exec.env;
  env["KUBERNETES_EXEC_INFO"] = info.dump();
  std::vector<std::string> argv = {exec.command};
  argv.insert(argv.end(), exec.args.begin(), exec.args.end());
  auto run = RunProcess({.argv = argv, .env = env, .timeout = std::chrono::seconds(60)});
  const std::string who = "exec credential plugin '" + exec.command + "'";
  if (!run.ok()) {
    if (run.status().code() == StatusCode::kNotFound) {
      return Status::FailedPrecondition(
          who + " not found" + (exec.install_hint.empty() ? "" : ": " + exec.install_hint));
    }
    return Status::Unauthenticated(who + ": " + run.status().message());
  }
  if (run->exit_code != 0) {
    return Status::Unauthenticated(who + " exited with code " + std::to_string(run->exit_code) +
                                   ": " + Trim(run->stderr_data));
  }
  auto doc = nlohmann::json::parse(run->stdout_data, nullptr, false);
  if (!doc.is_object() || doc.value("kind", "") != "ExecCredential" || !doc.contains("status") ||
      !doc["status"].is_object()) {
    return Status::Unauthenticated(who + " did not print an ExecCredential with a status");
  }
  if (doc.value("apiVersion", "") != exec.api_version) {
    return Status::Unauthenticated(who + " answered with apiVersion \"" +
                                   doc.value("apiVersion", "") + "\", expected \"" +
                                   exec.api_version + "\"");
  }
  const auto& st = doc["status"];
  ExecCredential out;
  out.token = st.value("token", "");
  out.client_cert_pem = st.value("clientCertificateData", "");
  out.client_key_pem = st.value("clientKeyData", "");
  if (out.token.empty() && (out.client_cert_pem.empty() || out.client_key_pem.empty())) {
    return Status::Unauthenticated(who +
                                   " returned neither a token nor a client certificate and key");
  }
  if (st.contains("expirationTimestamp") && st["expirationTimestamp"].is_string()) {
    auto expiry = ParseRfc3339(st["expirationTimestamp"].get<std::string>());
    if (!expiry.ok()) {
      return Status::Unauthenticated(
          who + " returned an unparseable expirationTimestamp: " + expiry.status().message());
    }
    out.expiry = std::chrono::floor<std::chrono::seconds>(*expiry);
  }
  return out;
}

Credentials::Credentials(RestConfig config, Clock clock)
    : config_(std::move(config)), clock_(std::move(clock)) {}

StatusOr<ExecCredential> Credentials::CachedExec() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::time_point_cast<std::chrono::seconds>(clock_());
  if (cached_ && (!cached_->expiry || now + kExpirySlack < *cached_->expiry)) {
    return *cached_;
  }
  KILN_ASSIGN_OR_RETURN(ExecCredential fresh, RunExecPlugin(*config_.exec, config_));
  cached_ = fresh;
  return fresh;
}

StatusOr<std::string> Credentials::AuthorizationHeader() {
  if (!config_.bearer_token.empty()) return "Bearer " + config_.bearer_token;
  if (!config_.bearer_token_file.empty()) {
    auto token = ReadFile(config_.bearer_token_file);
    if (!token.ok()) {
      return Status::Unauthenticated("token file: " + token.status().message());
    }
    return "Bearer " + Trim(*token);
  }
  if (config_.exec) {
    KILN_ASSIGN_OR_RETURN(ExecCredential cred, CachedExec());
    if (!cred.token.empty()) return "Bearer " + cred.token;
  }
  return std::string();
}

StatusOr<ExecCredential> Credentials::ExecClientCertificate() {
  if (!config_.exec) return ExecCredential{};
  return CachedExec();
}

void Credentials::Invalidate() {
  std::lock_guard<std::mutex> lock(mu_);
  cached_.reset();
}

}  // namespace kiln::kube
