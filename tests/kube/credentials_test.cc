// Credentials: the Authorization header from a static token, a token file
// (re-read, for rotation), or an exec plugin (cached until near its expiry,
// fetched again after Invalidate), client certificates from a plugin, and
// clear errors for a missing file or a failing plugin.
#include "kube/credentials.h"

#include <filesystem>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "tests/support/temp_dir.h"

namespace kiln::kube {
namespace {

using Catch::Contains;
using kiln::testing::TempDir;

TEST_CASE("static tokens and token files give bearer headers, certificates none",
          "[kube][credentials]") {
  TempDir dir;
  {
    Credentials creds(RestConfig{.bearer_token = "static"});
    CHECK(*creds.AuthorizationHeader() == "Bearer static");
  }
  {
    // A rotated file is read again; surrounding whitespace is not part of it.
    std::string file = dir.Write("token", "first\n");
    Credentials creds(RestConfig{.bearer_token_file = file});
    CHECK(*creds.AuthorizationHeader() == "Bearer first");
    dir.Write("token", "  second  \n");
    CHECK(*creds.AuthorizationHeader() == "Bearer second");
    std::filesystem::remove(file);
    auto gone = creds.AuthorizationHeader();
    REQUIRE_FALSE(gone.ok());
    CHECK_THAT(gone.status().message(), Contains(file));
  }
  {
    Credentials creds(RestConfig{});  // Client certificate or anonymous.
    CHECK(creds.AuthorizationHeader()->empty());
    CHECK(creds.ExecClientCertificate()->client_cert_pem.empty());
  }
}

std::string ExecScript(TempDir& dir, const std::string& body) {
  std::string path = dir.Write("plugin.sh", "#!/bin/sh\n" + body);
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

// A plugin that appends a line to `count_file` per run, runs `check`, and
// prints a v1 ExecCredential with `token` expiring at `expiry`.
std::string CountingTokenPlugin(TempDir& dir, const std::string& count_file,
                                const std::string& token, const std::string& expiry,
                                const std::string& check = "") {
  return ExecScript(dir, "echo x >> " + count_file + "\n" + check +
                             "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\","
                             "\"kind\":\"ExecCredential\",\"status\":{\"token\":\"" +
                             token + "\",\"expirationTimestamp\":\"" + expiry + "\"}}'\n");
}

// The far-future expiry is a regression test: year 2999 overflowed a
// nanosecond system_clock time_point, so the token never counted as cached.
TEST_CASE("exec plugins supply tokens, cached until near expiry", "[kube][credentials]") {
  TempDir dir;
  std::string count = dir.path() + "/count";
  std::string script = CountingTokenPlugin(
      dir, count, "plugin-token", "2999-01-01T00:00:00Z",
      "case \"$KUBERNETES_EXEC_INFO\" in *'\"interactive\":false'*) ;; *) exit 9;; esac\n");
  RestConfig cfg;
  cfg.exec = ExecConfig{.command = script, .api_version = "client.authentication.k8s.io/v1"};
  Credentials creds(cfg);
  CHECK(*creds.AuthorizationHeader() == "Bearer plugin-token");
  CHECK(*creds.AuthorizationHeader() == "Bearer plugin-token");
  CHECK(ReadFile(count).value_or("").size() == 2);  // Ran once: "x\n".
  creds.Invalidate();
  CHECK(creds.AuthorizationHeader().ok());
  CHECK(ReadFile(count).value_or("").size() == 4);
}

TEST_CASE("expired exec credentials are fetched again", "[kube][credentials]") {
  TempDir dir;
  std::string count = dir.path() + "/count";
  std::string script = CountingTokenPlugin(dir, count, "t", "2030-01-01T00:00:00Z");
  RestConfig cfg;
  cfg.exec = ExecConfig{.command = script, .api_version = "client.authentication.k8s.io/v1"};
  auto now = std::chrono::system_clock::from_time_t(1893456000 - 3600);  // 2029-12-31T23:00Z
  Credentials creds(cfg, [&] { return now; });
  REQUIRE(creds.AuthorizationHeader().ok());
  REQUIRE(creds.AuthorizationHeader().ok());
  CHECK(ReadFile(count).value_or("").size() == 2);
  now += std::chrono::minutes(59) + std::chrono::seconds(45);  // Within the refresh slack.
  REQUIRE(creds.AuthorizationHeader().ok());
  CHECK(ReadFile(count).value_or("").size() == 4);
}

TEST_CASE("exec plugin failures are clear", "[kube][credentials]") {
  TempDir dir;
  RestConfig cfg;
  cfg.exec = ExecConfig{.command = "kiln-no-such-plugin",
                        .api_version = "client.authentication.k8s.io/v1",
                        .install_hint = "install it from your cloud's CLI"};
  auto missing = RunExecPlugin(*cfg.exec, cfg);
  CHECK(missing.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(missing.status().message(), Contains("install it from your cloud's CLI"));

  cfg.exec->command = ExecScript(dir, "echo 'token expired, run login' >&2\nexit 3\n");
  auto failed = RunExecPlugin(*cfg.exec, cfg);
  CHECK(failed.status().code() == StatusCode::kUnauthenticated);
  CHECK_THAT(failed.status().message(), Contains("exited with code 3: token expired, run login"));

  cfg.exec->command = ExecScript(dir, "echo not-json\n");
  CHECK_THAT(RunExecPlugin(*cfg.exec, cfg).status().message(),
             Contains("did not print an ExecCredential"));

  cfg.exec->command = ExecScript(
      dir,
      "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\","
      "\"status\":{\"token\":\"t\"}}'\n");
  CHECK_THAT(RunExecPlugin(*cfg.exec, cfg).status().message(),
             Contains("expected \"client.authentication.k8s.io/v1\""));
}

TEST_CASE("an exec plugin may return a client certificate instead of a token",
          "[kube][credentials]") {
  TempDir dir;
  RestConfig cfg;
  cfg.exec = ExecConfig{
      .command = ExecScript(
          dir,
          "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
          "\"status\":{\"clientCertificateData\":\"CERT\",\"clientKeyData\":\"KEY\"}}'\n"),
      .api_version = "client.authentication.k8s.io/v1"};
  Credentials creds(cfg);
  auto cert = creds.ExecClientCertificate();
  INFO(cert.status().ToString());
  REQUIRE(cert.ok());
  CHECK(cert->client_cert_pem == "CERT");
  CHECK(cert->client_key_pem == "KEY");
  CHECK(creds.AuthorizationHeader()->empty());
}

}  // namespace
}  // namespace kiln::kube
