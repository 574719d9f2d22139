// Integration tests of kiln's Kubernetes client (kube/) against the
// real local clusters of the kiln_controlplane fixture.
#include <chrono>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "kube/api_error.h"
#include "kube/client.h"
#include "kube/kubeconfig.h"
#include "tests/support/local_clusters.h"
#include "tests/support/test_pki.h"

namespace kiln::kube {
namespace {

using Catch::Contains;
using kiln::testing::LocalCluster;
using kiln::testing::LocalClusters;
using kiln::testing::UniqueName;

struct Env {
  Env() {
    auto lc = LocalClusters::FromEnvironment();
    if (!lc.ok()) FAIL(lc.status().ToString());
    clusters = std::make_unique<LocalClusters>(std::move(*lc));
    auto c = clusters->Client(cluster());
    if (!c.ok()) FAIL(c.status().ToString());
    client = std::move(*c);
    ns = UniqueName("kiln-client");
    auto created = client->Create(resources::kNamespaces, "", {{"metadata", {{"name", ns}}}});
    if (!created.ok()) FAIL(created.status().ToString());
  }
  ~Env() { (void)client->Delete(resources::kNamespaces, "", ns); }
  const LocalCluster& cluster() const { return clusters->clusters()[0]; }

  std::unique_ptr<LocalClusters> clusters;
  std::unique_ptr<Client> client;
  std::string ns;
};

json ConfigMap(const std::string& ns, const std::string& name, json labels = json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}}},
          {"data", {{"k", "v"}}}};
}

TEST_CASE("CRUD with optimistic concurrency on a core resource", "[integration][kube]") {
  Env env;
  Client& c = *env.client;
  auto created = c.Create(resources::kConfigMaps, env.ns, ConfigMap(env.ns, "a"));
  REQUIRE(created.ok());
  std::string rv = (*created)["metadata"]["resourceVersion"];
  CHECK(IsAlreadyExists(c.Create(resources::kConfigMaps, env.ns, ConfigMap(env.ns, "a")).status()));

  auto got = c.Get(resources::kConfigMaps, env.ns, "a");
  REQUIRE(got.ok());
  CHECK((*got)["data"]["k"] == "v");

  json changed = *got;
  changed["data"]["k"] = "v2";
  auto updated = c.Update(resources::kConfigMaps, changed);
  REQUIRE(updated.ok());
  CHECK((*updated)["metadata"]["resourceVersion"] != rv);

  // Writing again from the stale copy loses the race.
  changed["data"]["k"] = "v3";
  auto stale = c.Update(resources::kConfigMaps, changed);
  CHECK(IsConflict(stale.status()));
  CHECK(stale.status().code() == StatusCode::kAborted);
  CHECK_THAT(stale.status().message(), Contains("the object has been modified"));

  auto patched =
      c.Patch(resources::kConfigMaps, env.ns, "a", PatchType::kMerge, R"({"data":{"extra":"1"}})");
  REQUIRE(patched.ok());
  CHECK((*patched)["data"]["k"] == "v2");
  CHECK((*patched)["data"]["extra"] == "1");
  auto json_patched = c.Patch(resources::kConfigMaps, env.ns, "a", PatchType::kJsonPatch,
                              R"([{"op":"remove","path":"/data/extra"}])");
  REQUIRE(json_patched.ok());
  CHECK_FALSE((*json_patched)["data"].contains("extra"));

  // A delete precondition on the wrong UID is refused; the right one succeeds.
  auto wrong = c.Delete(resources::kConfigMaps, env.ns, "a", {.precondition_uid = "not-the-uid"});
  CHECK(IsConflict(wrong.status()));
  // Foreground deletion: the object stays, marked, until the garbage
  // collector has removed its dependents (none here) and then itself.
  std::string uid = (*created)["metadata"]["uid"];
  auto deleted = c.Delete(resources::kConfigMaps, env.ns, "a",
                          {.propagation_policy = "Foreground", .precondition_uid = uid});
  REQUIRE(deleted.ok());
  if ((*deleted).value("kind", "") == "ConfigMap") {
    CHECK((*deleted)["metadata"].contains("deletionTimestamp"));
    CHECK((*deleted)["metadata"]["finalizers"] == json::array({"foregroundDeletion"}));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!IsNotFound(c.Get(resources::kConfigMaps, env.ns, "a").status())) {
    if (std::chrono::steady_clock::now() > deadline) FAIL("foreground deletion never finished");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(IsNotFound(c.Delete(resources::kConfigMaps, env.ns, "a").status()));
}

TEST_CASE("label and field selectors, and pagination", "[integration][kube]") {
  Env env;
  Client& c = *env.client;
  for (int i = 0; i < 25; ++i) {
    json labels = {{"tier", i % 2 == 0 ? "even" : "odd"}, {"kiln.dev/test", "paging"}};
    REQUIRE(c.Create(resources::kConfigMaps, env.ns,
                     ConfigMap(env.ns, "cm-" + std::to_string(i), labels))
                .ok());
  }
  auto page = c.List(resources::kConfigMaps, env.ns,
                     {.label_selector = "kiln.dev/test=paging", .limit = 10});
  REQUIRE(page.ok());
  CHECK((*page)["items"].size() == 10);
  CHECK_FALSE((*page)["metadata"].value("continue", "").empty());

  auto all = c.ListAll(resources::kConfigMaps, env.ns,
                       {.label_selector = "kiln.dev/test=paging", .limit = 10});
  REQUIRE(all.ok());
  std::set<std::string> names;
  for (const auto& item : (*all)["items"]) names.insert(item["metadata"]["name"]);
  CHECK(names.size() == 25);

  auto even = c.ListAll(resources::kConfigMaps, env.ns, {.label_selector = "tier=even"});
  REQUIRE(even.ok());
  CHECK((*even)["items"].size() == 13);
  auto set_based =
      c.ListAll(resources::kConfigMaps, env.ns, {.label_selector = "tier in (odd),kiln.dev/test"});
  REQUIRE(set_based.ok());
  CHECK((*set_based)["items"].size() == 12);

  auto one = c.List(resources::kConfigMaps, env.ns, {.field_selector = "metadata.name=cm-7"});
  REQUIRE(one.ok());
  REQUIRE((*one)["items"].size() == 1);
  CHECK((*one)["items"][0]["metadata"]["name"] == "cm-7");

  auto bad = c.List(resources::kConfigMaps, env.ns, {.label_selector = "tier in (("});
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("server-side apply tracks field ownership and reports conflicts", "[integration][kube]") {
  Env env;
  Client& c = *env.client;
  json cm = ConfigMap(env.ns, "owned");
  cm["data"] = {{"replicas", "3"}};
  auto first = c.Apply(resources::kConfigMaps, cm, "kiln-operator");
  REQUIRE(first.ok());
  CHECK((*first)["metadata"]["managedFields"][0]["manager"] == "kiln-operator");

  json theirs = ConfigMap(env.ns, "owned");
  theirs["data"] = {{"replicas", "5"}};
  auto conflict = c.Apply(resources::kConfigMaps, theirs, "someone-else");
  CHECK(IsConflict(conflict.status()));
  REQUIRE(GetApiError(conflict.status()) != nullptr);
  REQUIRE_FALSE(GetApiError(conflict.status())->causes.empty());
  CHECK_THAT(conflict.status().message(), Contains("kiln-operator"));
  CHECK_THAT(conflict.status().message(), Contains(".data.replicas"));

  auto forced = c.Apply(resources::kConfigMaps, theirs, "someone-else", /*force=*/true);
  REQUIRE(forced.ok());
  CHECK((*forced)["data"]["replicas"] == "5");
  std::set<std::string> managers;
  for (const auto& mf : (*forced)["metadata"]["managedFields"]) managers.insert(mf["manager"]);
  CHECK(managers.count("someone-else") == 1);

  // Re-applying the same intent is a no-op, not a conflict.
  REQUIRE(c.Apply(resources::kConfigMaps, theirs, "someone-else").ok());
}

TEST_CASE("a custom resource with status and scale subresources", "[integration][kube]") {
  Env env;
  Client& c = *env.client;
  json crd = json::parse(R"({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.kiln.dev"},
    "spec": {"group": "test.kiln.dev", "scope": "Namespaced",
      "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
      "versions": [{"name": "v1", "served": true, "storage": true,
        "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                 "statusReplicasPath": ".status.replicas"}},
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
          "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}},
          "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                      "phase": {"type": "string"}}}}}}}]}})");
  REQUIRE(c.Apply(resources::kCustomResourceDefinitions, crd, "kiln-tests").ok());
  Resource widgets;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    auto r = c.ResourceFor("test.kiln.dev/v1", "Widget");
    if (r.ok()) {
      widgets = *r;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) FAIL("CRD never served: " << r.status());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(widgets.resource == "widgets");
  CHECK(widgets.namespaced);

  json w = {{"apiVersion", "test.kiln.dev/v1"},
            {"kind", "Widget"},
            {"metadata", {{"name", "w1"}, {"namespace", env.ns}}},
            {"spec", {{"replicas", 2}}}};
  auto created = c.Create(widgets, env.ns, w);
  REQUIRE(created.ok());
  CHECK_FALSE((*created).contains("status"));

  // Status goes through its own subresource; the main endpoint ignores it.
  json with_status = *created;
  with_status["status"] = {{"phase", "Running"}, {"replicas", 2}};
  auto status = c.UpdateStatus(widgets, with_status);
  REQUIRE(status.ok());
  CHECK((*status)["status"]["phase"] == "Running");
  CHECK((*c.Get(widgets, env.ns, "w1"))["status"]["phase"] == "Running");

  auto scale = c.GetScale(widgets, env.ns, "w1");
  REQUIRE(scale.ok());
  CHECK((*scale)["kind"] == "Scale");
  CHECK((*scale)["spec"]["replicas"] == 2);
  REQUIRE(c.SetScale(widgets, env.ns, "w1", 5).ok());
  CHECK((*c.Get(widgets, env.ns, "w1"))["spec"]["replicas"] == 5);

  // The schema's bound is enforced server-side with the field named.
  json bad = w;
  bad["metadata"]["name"] = "w2";
  bad["spec"]["replicas"] = -1;
  auto invalid = c.Create(widgets, env.ns, bad);
  CHECK(IsInvalid(invalid.status()));
  CHECK_THAT(invalid.status().message(), Contains("spec.replicas"));
}

TEST_CASE("discovery and server version", "[integration][kube]") {
  Env env;
  auto version = env.client->ServerVersion();
  REQUIRE(version.ok());
  CHECK((*version)["gitVersion"] == "v1.33.13");
  auto deploy = env.client->ResourceFor("apps/v1", "Deployment");
  REQUIRE(deploy.ok());
  CHECK(deploy->resource == "deployments");
  CHECK(deploy->namespaced);
  auto node = env.client->ResourceFor("v1", "Node");
  REQUIRE(node.ok());
  CHECK_FALSE(node->namespaced);
  CHECK(env.client->ResourceFor("v1", "NoSuchKind").status().code() == StatusCode::kNotFound);
}

TEST_CASE("invalid objects are rejected naming the field", "[integration][kube]") {
  Env env;
  auto bad =
      env.client->Create(resources::kConfigMaps, env.ns, ConfigMap(env.ns, "Not_A_Valid_Name"));
  CHECK(IsInvalid(bad.status()));
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad.status().message(), Contains("metadata.name"));
}

TEST_CASE("a service-account token authenticates and RBAC decides", "[integration][kube]") {
  Env env;
  Client& admin = *env.client;
  const Resource service_accounts{"", "v1", "serviceaccounts", "ServiceAccount", true};
  REQUIRE(admin.Create(service_accounts, env.ns, {{"metadata", {{"name", "robot"}}}}).ok());
  HttpRequest req;
  req.method = "POST";
  req.path = service_accounts.Path(env.ns, "robot", "token");
  req.body =
      R"({"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}})";
  req.headers["Content-Type"] = "application/json";
  auto resp = admin.Request(req);
  REQUIRE(resp.ok());
  std::string sa_token = json::parse(resp->body)["status"]["token"];

  RestConfig cfg = admin.config();
  cfg.client_cert_pem.clear();
  cfg.client_key_pem.clear();
  cfg.bearer_token = sa_token;
  auto robot = Client::New(cfg);
  REQUIRE(robot.ok());
  CHECK((*robot)->ServerVersion().ok());
  auto secrets = (*robot)->List(resources::kSecrets, env.ns);
  CHECK(IsForbidden(secrets.status()));
  CHECK(secrets.status().code() == StatusCode::kPermissionDenied);
  CHECK_THAT(secrets.status().message(), Contains("system:serviceaccount:" + env.ns + ":robot"));
}

TEST_CASE("bad connections fail fast with the cause", "[integration][kube]") {
  Env env;
  const RestConfig good = env.client->config();
  ClientOptions fast{.max_retries = 1, .request_timeout = std::chrono::seconds(10)};

  SECTION("the wrong CA") {
    RestConfig cfg = good;
    auto other = LoadKubeconfig(env.clusters->clusters()[1].kubeconfig);
    REQUIRE(other.ok());
    cfg.ca_pem = other->ca_pem;
    auto c = Client::New(cfg, fast);
    REQUIRE(c.ok());
    auto r = (*c)->ServerVersion();
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK_THAT(r.status().message(), Contains("TLS handshake"));
    CHECK_THAT(r.status().message(), Contains("certificate"));
  }
  SECTION("tls-server-name decides which name the certificate must carry") {
    RestConfig cfg = good;
    cfg.tls_server_name = "kubernetes.default";  // In the serving cert's SANs.
    auto c = Client::New(cfg, fast);
    REQUIRE(c.ok());
    CHECK((*c)->ServerVersion().ok());
    cfg.tls_server_name = "api.elsewhere.example";  // Not in them.
    auto wrong = Client::New(cfg, fast);
    REQUIRE(wrong.ok());
    auto r = (*wrong)->ServerVersion();
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK_THAT(r.status().message(), Contains("certificate"));
  }
  SECTION("an expired client certificate") {
    auto ca_cert = ReadFile(env.cluster().pki_dir + "/ca.crt");
    auto ca_key = ReadFile(env.cluster().pki_dir + "/ca.key");
    REQUIRE(ca_cert.ok());
    REQUIRE(ca_key.ok());
    auto expired = testing::IssueClientCert({*ca_cert, *ca_key}, "kiln-expired", {"system:masters"},
                                            -std::chrono::hours(48), -std::chrono::hours(24));
    REQUIRE(expired.ok());
    RestConfig cfg = good;
    cfg.client_cert_pem = expired->cert_pem;
    cfg.client_key_pem = expired->key_pem;
    auto c = Client::New(cfg, fast);
    REQUIRE(c.ok());
    auto r = (*c)->List(resources::kNamespaces, "");
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
    CHECK(IsUnauthorized(r.status()));
  }
  SECTION("a client certificate from a CA the server does not know") {
    auto rogue_ca = testing::NewTestCa("rogue");
    REQUIRE(rogue_ca.ok());
    auto cert = testing::IssueClientCert(*rogue_ca, "intruder", {"system:masters"},
                                         -std::chrono::hours(1), std::chrono::hours(1));
    REQUIRE(cert.ok());
    RestConfig cfg = good;
    cfg.client_cert_pem = cert->cert_pem;
    cfg.client_key_pem = cert->key_pem;
    auto r = (*Client::New(cfg, fast))->List(resources::kNamespaces, "");
    CHECK(r.status().code() == StatusCode::kUnauthenticated);
  }
  SECTION("an unreachable server") {
    RestConfig cfg = good;
    cfg.server = "https://127.0.0.1:1";  // Privileged port nothing here listens on.
    auto c = Client::New(cfg, fast);
    REQUIRE(c.ok());
    auto r = (*c)->ServerVersion();  // A hang here would trip the test's CTest timeout.
    CHECK(r.status().code() == StatusCode::kUnavailable);
    CHECK_THAT(r.status().message(), Contains("127.0.0.1:1"));
  }
  SECTION("a CA that is not a certificate") {
    RestConfig cfg = good;
    cfg.ca_pem = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    auto c = Client::New(cfg, fast);
    CHECK(c.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(c.status().message(), Contains("certificate authority is not a PEM certificate"));
  }
}

}  // namespace
}  // namespace kiln::kube
