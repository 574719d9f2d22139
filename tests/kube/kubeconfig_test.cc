#include "kube/kubeconfig.h"

#include <stdlib.h>

#include <catch2/catch.hpp>

#include "base/base64.h"
#include "tests/support/temp_dir.h"

namespace kiln::kube {
namespace {

using Catch::Contains;
using kiln::testing::TempDir;

std::string TwoClusterConfig() {
  return "apiVersion: v1\n"
         "kind: Config\n"
         "current-context: east\n"
         "clusters:\n"
         "- name: east\n"
         "  cluster:\n"
         "    server: https://127.0.0.1:6443/\n"
         "    certificate-authority-data: " +
         Base64Encode("EAST-CA") +
         "\n"
         "- name: west\n"
         "  cluster:\n"
         "    server: https://west.example:443\n"
         "    certificate-authority: certs/west-ca.pem\n"
         "    tls-server-name: api.west\n"
         "users:\n"
         "- name: east-admin\n"
         "  user:\n"
         "    client-certificate-data: " +
         Base64Encode("EAST-CERT") +
         "\n"
         "    client-key-data: " +
         Base64Encode("EAST-KEY") +
         "\n"
         "- name: west-robot\n"
         "  user:\n"
         "    tokenFile: secrets/token\n"
         "contexts:\n"
         "- name: east\n"
         "  context: {cluster: east, user: east-admin}\n"
         "- name: west\n"
         "  context: {cluster: west, user: west-robot, namespace: training}\n";
}

TEST_CASE("loads the current context with inline credentials", "[kube][kubeconfig]") {
  TempDir dir;
  auto cfg = LoadKubeconfig(dir.Write("config", TwoClusterConfig()));
  REQUIRE(cfg.ok());
  CHECK(cfg->context == "east");
  CHECK(cfg->server == "https://127.0.0.1:6443");  // Trailing slash dropped.
  CHECK(cfg->ca_pem == "EAST-CA");
  CHECK(cfg->client_cert_pem == "EAST-CERT");
  CHECK(cfg->client_key_pem == "EAST-KEY");
  CHECK(cfg->default_namespace == "default");
  CHECK_FALSE(cfg->insecure_skip_tls_verify);
}

TEST_CASE("an explicit context resolves files relative to the kubeconfig", "[kube][kubeconfig]") {
  TempDir dir;
  dir.Write("kube/certs/west-ca.pem", "WEST-CA");
  dir.Write("kube/secrets/token", "t0k3n");
  auto cfg = LoadKubeconfig(dir.Write("kube/config", TwoClusterConfig()), "west");
  REQUIRE(cfg.ok());
  CHECK(cfg->ca_pem == "WEST-CA");
  CHECK(cfg->tls_server_name == "api.west");
  CHECK(cfg->bearer_token_file == dir.path() + "/kube/secrets/token");
  CHECK(cfg->default_namespace == "training");
  CHECK(cfg->client_cert_pem.empty());
}

TEST_CASE("an unknown context is NotFound and lists the known ones", "[kube][kubeconfig]") {
  TempDir dir;
  auto cfg = LoadKubeconfig(dir.Write("config", TwoClusterConfig()), "north");
  REQUIRE_FALSE(cfg.ok());
  CHECK(cfg.status().code() == StatusCode::kNotFound);
  CHECK_THAT(cfg.status().message(), Contains("context \"north\" not found"));
  CHECK_THAT(cfg.status().message(), Contains("have: east, west"));
  auto contexts = KubeconfigContexts(dir.path() + "/config");
  REQUIRE(contexts.ok());
  CHECK(*contexts == std::vector<std::string>{"east", "west"});
}

TEST_CASE("a referenced file that is missing names its path", "[kube][kubeconfig]") {
  TempDir dir;
  auto cfg = LoadKubeconfig(dir.Write("config", TwoClusterConfig()), "west");
  REQUIRE_FALSE(cfg.ok());
  CHECK(cfg.status().code() == StatusCode::kNotFound);
  CHECK_THAT(cfg.status().message(), Contains("certificate-authority"));
  CHECK_THAT(cfg.status().message(), Contains(dir.path() + "/certs/west-ca.pem"));
}

TEST_CASE("malformed kubeconfigs are rejected with the field at fault", "[kube][kubeconfig]") {
  struct Case {
    const char* what;
    std::string yaml;
    const char* expect;
  };
  const std::string cluster =
      "clusters:\n- name: c\n  cluster: {server: 'https://h:1'}\n"
      "contexts:\n- name: x\n  context: {cluster: c, user: u}\n";
  std::vector<Case> cases = {
      {"broken YAML", "clusters: [\n  - name: a\n", "malformed YAML at line"},
      {"not a map", "- a\n- b\n", "must be a YAML map"},
      {"no current context", cluster, "current-context: empty"},
      {"missing server",
       "current-context: x\nclusters:\n- name: c\n  cluster: {}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "clusters[name=c].cluster.server: required"},
      {"server not a URL",
       "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'h:1'}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "must be an http(s):// URL"},
      {"both CA forms",
       "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1', "
       "certificate-authority: a.pem, certificate-authority-data: QQ==}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "both certificate-authority and certificate-authority-data"},
      {"insecure with CA",
       "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1', "
       "insecure-skip-tls-verify: true, certificate-authority-data: QQ==}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "insecure-skip-tls-verify cannot be combined"},
      {"bad base64",
       "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1', "
       "certificate-authority-data: '!!notbase64'}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "certificate-authority-data"},
      {"cert without key",
       "current-context: x\n" + cluster +
           "users:\n- name: u\n  user: {client-certificate-data: QQ==}\n",
       "client-certificate and client-key must be given together"},
      {"missing user", "current-context: x\n" + cluster, "user \"u\" not found in users"},
      {"basic auth",
       "current-context: x\n" + cluster + "users:\n- name: u\n  user: {username: a, password: b}\n",
       "username: not supported"},
      {"exec without command",
       "current-context: x\n" + cluster +
           "users:\n- name: u\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1}\n",
       "exec.command: required"},
      {"exec with a bad apiVersion",
       "current-context: x\n" + cluster +
           "users:\n- name: u\n  user:\n    exec: {command: x, apiVersion: v1}\n",
       "exec.apiVersion: must be client.authentication.k8s.io/v1"},
      {"insecure not a bool",
       "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1', "
       "insecure-skip-tls-verify: sometimes}\n"
       "contexts:\n- name: x\n  context: {cluster: c}\n",
       "insecure-skip-tls-verify: must be true or false"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto cfg = ParseKubeconfig(c.yaml, "/nowhere", "", "test.yaml");
    REQUIRE_FALSE(cfg.ok());
    CHECK_THAT(cfg.status().message(), Contains(c.expect));
    CHECK_THAT(cfg.status().message(), Contains("kubeconfig test.yaml"));
  }
}

TEST_CASE("insecure-skip-tls-verify applies only when set explicitly", "[kube][kubeconfig]") {
  auto cfg = ParseKubeconfig(
      "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1', "
      "insecure-skip-tls-verify: true}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
      "", "", "t");
  REQUIRE(cfg.ok());
  CHECK(cfg->insecure_skip_tls_verify);
}

TEST_CASE("exec credential plugins are parsed in full", "[kube][kubeconfig]") {
  auto cfg = ParseKubeconfig(
      "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h:1'}\n"
      "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
      "users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n"
      "      command: get-token\n      args: [--cluster, c]\n"
      "      env: [{name: REGION, value: eu}]\n      installHint: install get-token\n"
      "      provideClusterInfo: true\n",
      "", "", "t");
  REQUIRE(cfg.ok());
  REQUIRE(cfg->exec.has_value());
  CHECK(cfg->exec->command == "get-token");
  CHECK(cfg->exec->args == std::vector<std::string>{"--cluster", "c"});
  CHECK(cfg->exec->env.at("REGION") == "eu");
  CHECK(cfg->exec->install_hint == "install get-token");
  CHECK(cfg->exec->provide_cluster_info);
}

TEST_CASE("in-cluster config reads the service account mount", "[kube][kubeconfig]") {
  TempDir dir;
  InClusterPaths paths{dir.path() + "/token", dir.path() + "/ca.crt", dir.path() + "/namespace"};
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  CHECK(InClusterConfig(paths).status().code() == StatusCode::kFailedPrecondition);

  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto missing = InClusterConfig(paths);
  CHECK(missing.status().code() == StatusCode::kNotFound);

  dir.Write("token", "sa-token");
  dir.Write("ca.crt", "CLUSTER-CA");
  dir.Write("namespace", "kiln-system\n");
  auto cfg = InClusterConfig(paths);
  REQUIRE(cfg.ok());
  CHECK(cfg->server == "https://10.96.0.1:443");
  CHECK(cfg->ca_pem == "CLUSTER-CA");
  CHECK(cfg->bearer_token_file == paths.token_file);
  CHECK(cfg->default_namespace == "kiln-system");

  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  CHECK(InClusterConfig(paths)->server == "https://[fd00::1]:443");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

TEST_CASE("a KUBECONFIG list merges as kubectl merges it", "[kube][kubeconfig]") {
  TempDir a, b;
  // The first file sets current-context and the context; the second holds
  // the cluster (a CA file relative to the second file's folder) and the user,
  // and a context of the same name, which loses.
  const std::string first = a.Write("config",
                                    "current-context: work\n"
                                    "contexts:\n"
                                    "- name: work\n"
                                    "  context: {cluster: east, user: alice, namespace: team}\n");
  b.Write("certs/ca.pem", "SECOND-CA");
  const std::string second =
      b.Write("config",
              "current-context: other\n"
              "clusters:\n"
              "- name: east\n"
              "  cluster: {server: https://east:6443, certificate-authority: "
              "certs/ca.pem}\n"
              "users:\n"
              "- name: alice\n"
              "  user: {token: alice-token}\n"
              "contexts:\n"
              "- name: work\n"
              "  context: {cluster: east, user: alice, namespace: loser}\n"
              "- name: other\n"
              "  context: {cluster: east}\n");
  auto cfg = LoadMergedKubeconfig({first, a.path() + "/missing", second});
  REQUIRE(cfg.ok());
  CHECK(cfg->context == "work");
  CHECK(cfg->default_namespace == "team");
  CHECK(cfg->server == "https://east:6443");
  CHECK(cfg->ca_pem == "SECOND-CA");
  CHECK(cfg->bearer_token == "alice-token");

  auto other = LoadMergedKubeconfig({first, second}, "other");
  REQUIRE(other.ok());
  CHECK(other->bearer_token.empty());

  auto none = LoadMergedKubeconfig({a.path() + "/x", b.path() + "/y"});
  CHECK(none.status().code() == StatusCode::kNotFound);
  CHECK_THAT(none.status().message(), Contains("none of"));
}

}  // namespace
}  // namespace kiln::kube
