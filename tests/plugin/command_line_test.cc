#include "plugin/command_line.h"

#include <catch2/catch.hpp>

#include "plugin/connection.h"

namespace kiln::plugin {
namespace {

using Catch::Contains;

CommandLine Parse(std::vector<std::string> args) {
  auto cl = ParseCommandLine(args);
  INFO(cl.status().message());
  REQUIRE(cl.ok());
  return *cl;
}

std::string Error(std::vector<std::string> args) {
  auto cl = ParseCommandLine(args);
  REQUIRE_FALSE(cl.ok());
  CHECK(cl.status().code() == StatusCode::kInvalidArgument);
  return cl.status().message();
}

TEST_CASE("status takes a kind, a name and kubectl's flags anywhere", "[plugin][cli]") {
  CommandLine cl = Parse({"-n", "research", "status", "tj", "gpt", "--context=hub", "-o", "yaml",
                          "--kubeconfig", "/tmp/k"});
  CHECK(cl.verb == Verb::kStatus);
  CHECK(cl.kind == Kind::kTrainingJob);
  CHECK(cl.name == "gpt");
  CHECK(cl.ns == "research");
  CHECK(cl.context == "hub");
  CHECK(cl.output == "yaml");
  CHECK(cl.kubeconfig == "/tmp/k");

  CHECK(Parse({"status", "modeldeployment", "chat"}).kind == Kind::kModelDeployment);
  CHECK(Parse({"status", "md"}).name.empty());
  CommandLine all = Parse({"status", "trainingjobs", "-A"});
  CHECK(all.all_namespaces);
  CHECK(all.name.empty());
}

TEST_CASE("actions and logs take the kind or leave it out", "[plugin][cli]") {
  CHECK(Parse({"promote", "chat"}).verb == Verb::kPromote);
  CHECK(Parse({"promote", "md", "chat"}).name == "chat");
  CHECK(Parse({"abort", "chat"}).verb == Verb::kAbort);
  CHECK(Parse({"rollback", "modeldeployment", "chat"}).verb == Verb::kRollback);
  CHECK(Parse({"continue", "chat"}).verb == Verb::kContinue);
  CommandLine logs = Parse({"logs", "tj", "gpt", "--rank", "3", "-f", "--tail=20"});
  CHECK(logs.verb == Verb::kLogs);
  CHECK(logs.kind == Kind::kTrainingJob);
  CHECK(logs.name == "gpt");
  CHECK(logs.rank == 3);
  CHECK(logs.follow);
  CHECK(logs.tail == 20);
  CHECK_FALSE(Parse({"logs", "gpt"}).rank.has_value());
  CHECK(Parse({"watch", "md", "chat"}).verb == Verb::kWatch);
}

TEST_CASE("help and version", "[plugin][cli]") {
  CHECK(Parse({}).verb == Verb::kHelp);
  CHECK(Parse({"--help"}).verb == Verb::kHelp);
  CHECK(Parse({"status", "tj", "x", "-h"}).verb == Verb::kHelp);
  CHECK(Parse({"version"}).verb == Verb::kVersion);
  const std::string usage = Usage();
  CHECK_THAT(usage, Contains("kubectl kiln status (trainingjob|tj) [NAME]"));
  CHECK_THAT(usage, Contains("-n, --namespace NS"));
  CHECK_THAT(usage, Contains("-A, --all-namespaces"));
  CHECK_THAT(usage, Contains("Exit status:"));
}

TEST_CASE("bad usage says what is wrong", "[plugin][cli]") {
  CHECK_THAT(Error({"frobnicate"}), Contains("unknown command \"frobnicate\""));
  CHECK(Error({"status"}) == "status needs a kind: trainingjob (tj) or modeldeployment (md)");
  CHECK_THAT(Error({"status", "pods", "x"}), Contains("unknown kind \"pods\""));
  CHECK(Error({"status", "tj", "a", "b"}) == "status takes one NAME");
  CHECK(Error({"watch", "tj"}) == "watch needs a NAME");
  CHECK(Error({"status", "tj", "x", "-A"}) == "-A lists every object; give no NAME with it");
  CHECK(Error({"promote"}) == "promote needs one NAME of a modeldeployment");
  CHECK(Error({"promote", "tj", "x"}) == "promote applies to a modeldeployment, not \"tj\"");
  CHECK(Error({"logs", "md", "x"}) == "logs applies to a trainingjob, not \"md\"");
  CHECK(Error({"status", "tj", "x", "--rank", "1"}) == "--rank applies to logs");
  CHECK(Error({"promote", "x", "-o", "json"}) == "--output applies to status");
  CHECK(Error({"logs", "x", "--rank", "-1"}) == "--rank: \"-1\" is outside [0, 2147483647]");
  CHECK(Error({"status", "tj", "-o", "wide"}) == "-o: \"wide\" is not one of json, yaml");
  CHECK(Error({"status", "tj", "--bogus"}) == "unknown flag '--bogus'");
  CHECK(Error({"version", "now"}) == "version takes no arguments");
}

TEST_CASE("the kubeconfig: the flag, then $KUBECONFIG's list, then ~/.kube/config",
          "[plugin][cli]") {
  CommandLine cl;
  Environment env{.kubeconfig = "/a:/b::/c", .home = "/home/u"};
  CHECK(KubeconfigPaths(cl, env) == std::vector<std::string>{"/a", "/b", "/c"});
  cl.kubeconfig = "/flag";
  CHECK(KubeconfigPaths(cl, env) == std::vector<std::string>{"/flag"});
  cl.kubeconfig.clear();
  env.kubeconfig.clear();
  CHECK(KubeconfigPaths(cl, env) == std::vector<std::string>{"/home/u/.kube/config"});
  env.in_cluster = true;  // No ~/.kube/config there: the service account.
  CHECK(KubeconfigPaths(cl, env).empty());

  kube::RestConfig config;
  config.default_namespace = "team";
  CHECK(Namespace(cl, config) == "team");
  cl.ns = "other";
  CHECK(Namespace(cl, config) == "other");
}

}  // namespace
}  // namespace kiln::plugin
