#include "kube/client.h"

#include <stop_token>

#include <catch2/catch.hpp>

#include "base/context.h"
#include "base/file.h"
#include "kube/api_error.h"
#include "tests/kube/fake_transport.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace kiln::kube {
namespace {

using Catch::Contains;
using kiln::testing::FakeClock;
using kiln::testing::TempDir;
using testing::FakeTransport;

struct Harness {
  explicit Harness(RestConfig config = {}, ClientOptions options = {}) {
    if (config.server.empty()) config.server = "https://127.0.0.1:6443";
    auto t = std::make_unique<FakeTransport>();
    transport = t.get();
    client = std::make_unique<Client>(config, options, std::move(t), &clock);
  }
  FakeClock clock;
  FakeTransport* transport;
  std::unique_ptr<Client> client;
};

std::string StatusBody(int code, const std::string& reason, const std::string& message,
                       json details = json::object()) {
  return json{{"kind", "Status"}, {"apiVersion", "v1"}, {"status", "Failure"}, {"code", code},
              {"reason", reason}, {"message", message}, {"details", details}}
      .dump();
}

TEST_CASE("resource paths follow the API's URL layout", "[kube][client]") {
  CHECK(resources::kPods.Path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status");
  CHECK(resources::kPods.Path() == "/api/v1/pods");
  CHECK(resources::kNodes.Path("ignored", "n1") == "/api/v1/nodes/n1");
  CHECK(resources::kLeases.Path("kube-system") ==
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
  CHECK(resources::kDeployments.api_version() == "apps/v1");
  CHECK(QueryEscape("app in (a,b),tier!=db") == "app%20in%20%28a%2Cb%29%2Ctier%21%3Ddb");
}

TEST_CASE("list options become query parameters", "[kube][client]") {
  Harness h;
  h.transport->Respond(200, R"({"items":[],"metadata":{}})");
  REQUIRE(h.client
              ->List(resources::kPods, "ns",
                     {.label_selector = "app=x",
                      .field_selector = "spec.nodeName=n1",
                      .limit = 10,
                      .continue_token = "abc"})
              .ok());
  auto reqs = h.transport->requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "GET");
  CHECK(reqs[0].path ==
        "/api/v1/namespaces/ns/pods?labelSelector=app%3Dx&fieldSelector=spec.nodeName%3Dn1"
        "&limit=10&continue=abc");
  CHECK(reqs[0].headers.at("Accept") == "application/json");
  CHECK(reqs[0].headers.at("User-Agent").rfind("kiln/", 0) == 0);
}

TEST_CASE("ListAll follows continue tokens and joins the pages", "[kube][client]") {
  Harness h;
  h.transport->Respond(200, R"({"items":[{"n":1},{"n":2}],"metadata":{"continue":"t1"}})");
  h.transport->Respond(200, R"({"items":[{"n":3}],"metadata":{"resourceVersion":"42"}})");
  auto all = h.client->ListAll(resources::kConfigMaps, "ns", {.limit = 2});
  REQUIRE(all.ok());
  CHECK((*all)["items"].size() == 3);
  CHECK((*all)["metadata"]["resourceVersion"] == "42");
  CHECK(h.transport->requests()[1].path == "/api/v1/namespaces/ns/configmaps?limit=2&continue=t1");
}

TEST_CASE("server errors become typed errors with the server's words", "[kube][client]") {
  Harness h;
  h.transport->Respond(
      404, StatusBody(404, "NotFound", "pods \"x\" not found", {{"name", "x"}, {"kind", "pods"}}));
  auto missing = h.client->Get(resources::kPods, "ns", "x");
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(IsNotFound(missing.status()));
  CHECK_THAT(missing.status().message(),
             Contains("GET /api/v1/namespaces/ns/pods/x: 404 NotFound: pods \"x\" not found"));
  REQUIRE(GetApiError(missing.status()) != nullptr);
  CHECK(GetApiError(missing.status())->name == "x");

  h.transport->Respond(
      422, StatusBody(422, "Invalid", "ConfigMap \"Bad\" is invalid",
                      {{"causes",
                        {{{"reason", "FieldValueInvalid"},
                          {"field", "metadata.name"},
                          {"message", "a lowercase RFC 1123 subdomain must consist of"}}}}}));
  auto invalid = h.client->Create(resources::kConfigMaps, "ns", {{"metadata", {{"name", "Bad"}}}});
  CHECK(invalid.status().code() == StatusCode::kInvalidArgument);
  CHECK(IsInvalid(invalid.status()));
  CHECK_THAT(invalid.status().message(), Contains("metadata.name: a lowercase RFC 1123"));
  CHECK(GetApiError(invalid.status())->causes.at(0).field == "metadata.name");

  h.transport->Respond(409, StatusBody(409, "Conflict", "the object has been modified"));
  auto conflict = h.client->Update(resources::kConfigMaps,
                                   {{"metadata", {{"name", "a"}, {"namespace", "ns"}}}});
  CHECK(IsConflict(conflict.status()));
  CHECK(conflict.status().code() == StatusCode::kAborted);

  h.transport->Respond(410, StatusBody(410, "Expired", "too old resource version: 1 (50)"));
  auto gone = h.client->List(resources::kPods, "", {.resource_version = "1"});
  CHECK(IsResourceExpired(gone.status()));

  h.transport->Respond(403, "forbidden: plain text body\n");
  auto forbidden = h.client->Get(resources::kSecrets, "ns", "s");
  CHECK(IsForbidden(forbidden.status()));
  CHECK_THAT(forbidden.status().message(), Contains("403 Forbidden: forbidden: plain text body"));
  CHECK(h.transport->pending() == 0);  // None of these were retried.
}

TEST_CASE("reads are retried on transient failures, with backoff", "[kube][client]") {
  Harness h;
  h.transport->Fail(Status::Unavailable("connection refused"));
  h.transport->Respond(503, "overloaded");
  h.transport->Respond(200, R"({"kind":"Pod"})");
  auto pod = h.client->Get(resources::kPods, "ns", "p");
  REQUIRE(pod.ok());
  CHECK(h.transport->requests().size() == 3);
  CHECK(h.clock.sleeps().size() == 2);
}

TEST_CASE("a call ends with the calling thread's context", "[kube][client][context]") {
  Harness h;
  SECTION("a stopped context sends nothing") {
    std::stop_source stop;
    stop.request_stop();
    ScopedContext scope(Context(stop.get_token(), std::nullopt));
    auto pod = h.client->Get(resources::kPods, "ns", "p");
    REQUIRE_FALSE(pod.ok());
    CHECK(pod.status().code() == StatusCode::kCancelled);
    CHECK_THAT(pod.status().message(), Contains("GET /api/v1/namespaces/ns/pods/p"));
    CHECK(h.transport->requests().empty());
  }
  SECTION("an attempt's timeout is capped by the time left") {
    h.transport->Respond(200, R"({"kind":"Pod"})");
    ScopedContext scope(Context().WithTimeout(std::chrono::seconds(2)));
    REQUIRE(h.client->Get(resources::kPods, "ns", "p").ok());
    REQUIRE(h.transport->requests().size() == 1);
    const auto timeout = h.transport->requests()[0].timeout;
    CHECK(timeout > std::chrono::milliseconds(0));
    CHECK(timeout <= std::chrono::seconds(2));
  }
  SECTION("no retry waits past the deadline, and the error says what failed last") {
    // The server asks for a 5 s pause; the context has 200 ms.
    h.transport->Respond(503, StatusBody(503, "ServiceUnavailable", "etcd is slow"),
                         {{"retry-after", "5"}});
    h.transport->Respond(200, R"({"kind":"Pod"})");
    ScopedContext scope(Context().WithTimeout(std::chrono::milliseconds(200)));
    auto pod = h.client->Get(resources::kPods, "ns", "p");
    REQUIRE_FALSE(pod.ok());
    CHECK(pod.status().code() == StatusCode::kDeadlineExceeded);
    CHECK_THAT(pod.status().message(), Contains("etcd is slow"));
    CHECK(h.transport->requests().size() == 1);
    CHECK(h.clock.sleeps().empty());  // Waited on the context, not the client's clock.
  }
  SECTION("without a context, the same retry waits and succeeds") {
    h.transport->Respond(503, StatusBody(503, "ServiceUnavailable", "etcd is slow"),
                         {{"retry-after", "5"}});
    h.transport->Respond(200, R"({"kind":"Pod"})");
    REQUIRE(h.client->Get(resources::kPods, "ns", "p").ok());
    CHECK(h.transport->requests().size() == 2);
    REQUIRE(h.clock.sleeps().size() == 1);
    CHECK(h.clock.sleeps()[0] >= std::chrono::seconds(5));
  }
}

class RecordingObserver final : public RequestObserver {
 public:
  void ObserveRequest(const RequestRecord& r) override {
    seen.push_back(std::string(r.method) + " " + std::to_string(r.code) + " " +
                   std::string(r.host));
  }
  std::vector<std::string> seen;
};

TEST_CASE("every attempt is reported to the observer with its code", "[kube][client]") {
  RecordingObserver observer;
  Harness h({}, {.observer = &observer});
  h.transport->Fail(Status::Unavailable("connection refused"));
  h.transport->Respond(503, "overloaded");
  h.transport->Respond(200, R"({"kind":"Pod"})");
  REQUIRE(h.client->Get(resources::kPods, "ns", "p").ok());
  h.transport->Respond(409, StatusBody(409, "Conflict", "stale"));
  CHECK(!h.client->Update(resources::kPods, {{"metadata", {{"name", "p"}, {"namespace", "ns"}}}})
             .ok());
  CHECK(observer.seen == std::vector<std::string>{
                             "GET 0 https://127.0.0.1:6443", "GET 503 https://127.0.0.1:6443",
                             "GET 200 https://127.0.0.1:6443", "PUT 409 https://127.0.0.1:6443"});
}

TEST_CASE("writes are not resent when the response was lost", "[kube][client]") {
  Harness h;
  h.transport->Fail(Status::Unavailable("connection reset"));
  auto created = h.client->Create(resources::kConfigMaps, "ns", {{"metadata", {{"name", "a"}}}});
  CHECK(created.status().code() == StatusCode::kUnavailable);
  CHECK(h.transport->requests().size() == 1);
  h.transport->Respond(500, StatusBody(500, "InternalError", "etcd hiccup"));
  auto failed = h.client->Create(resources::kConfigMaps, "ns", {{"metadata", {{"name", "a"}}}});
  CHECK(failed.status().code() == StatusCode::kUnavailable);
  CHECK(h.transport->requests().size() == 2);
}

TEST_CASE("429 is retried after Retry-After, for writes too, up to the limit", "[kube][client]") {
  Harness h({}, {.max_retries = 2});
  h.transport->Respond(429, StatusBody(429, "TooManyRequests", "slow down"),
                       {{"retry-after", "3"}});
  h.transport->Respond(201, R"({"metadata":{"name":"a"}})");
  auto created = h.client->Create(resources::kConfigMaps, "ns", {{"metadata", {{"name", "a"}}}});
  REQUIRE(created.ok());
  REQUIRE(h.clock.sleeps().size() == 1);
  CHECK(h.clock.sleeps()[0] >= std::chrono::seconds(3));

  for (int i = 0; i < 3; ++i) {
    h.transport->Respond(429, StatusBody(429, "TooManyRequests", "slow down"),
                         {{"retry-after", "1"}});
  }
  auto throttled = h.client->Get(resources::kPods, "ns", "p");
  CHECK(IsTooManyRequests(throttled.status()));
  CHECK(throttled.status().code() == StatusCode::kResourceExhausted);
  REQUIRE(GetApiError(throttled.status())->retry_after.has_value());
  CHECK(*GetApiError(throttled.status())->retry_after == std::chrono::seconds(1));
  CHECK(h.transport->pending() == 0);  // 1 try + 2 retries consumed all three.
}

TEST_CASE("client-side rate limiting spaces requests by QPS after the burst", "[kube][client]") {
  Harness h({}, {.qps = 2, .burst = 2});
  for (int i = 0; i < 4; ++i) h.transport->Respond(200, "{}");
  for (int i = 0; i < 4; ++i) REQUIRE(h.client->ServerVersion().ok());
  auto sleeps = h.clock.sleeps();
  REQUIRE(sleeps.size() == 2);
  CHECK(sleeps[0] == std::chrono::milliseconds(500));
  CHECK(sleeps[1] == std::chrono::milliseconds(500));
}

TEST_CASE("a token file is re-read on every request (rotation)", "[kube][client]") {
  TempDir dir;
  std::string token = dir.Write("token", "first\n");
  Harness h({.bearer_token_file = token});
  h.transport->Respond(200, "{}");
  h.transport->Respond(200, "{}");
  REQUIRE(h.client->ServerVersion().ok());
  dir.Write("token", "second");
  REQUIRE(h.client->ServerVersion().ok());
  auto reqs = h.transport->requests();
  CHECK(reqs[0].headers.at("Authorization") == "Bearer first");
  CHECK(reqs[1].headers.at("Authorization") == "Bearer second");
}

TEST_CASE("server-side apply sends the apply patch with manager and force", "[kube][client]") {
  Harness h;
  h.transport->Respond(200, "{}");
  json cm = {{"metadata", {{"name", "a"}, {"namespace", "ns"}}}, {"data", {{"k", "v"}}}};
  REQUIRE(h.client->Apply(resources::kConfigMaps, cm, "kiln-operator", true).ok());
  auto req = h.transport->requests().at(0);
  CHECK(req.method == "PATCH");
  CHECK(req.path == "/api/v1/namespaces/ns/configmaps/a?fieldManager=kiln-operator&force=true");
  CHECK(req.headers.at("Content-Type") == "application/apply-patch+yaml");
  auto body = json::parse(req.body);
  CHECK(body["apiVersion"] == "v1");
  CHECK(body["kind"] == "ConfigMap");
  CHECK(
      h.client->Patch(resources::kConfigMaps, "ns", "a", PatchType::kApply, "{}").status().code() ==
      StatusCode::kInvalidArgument);
  CHECK(h.client->Update(resources::kConfigMaps, {{"metadata", {{"name", "a"}}}}).status().code() ==
        StatusCode::kInvalidArgument);  // Namespaced object without a namespace.
}

TEST_CASE("delete sends propagation policy and preconditions", "[kube][client]") {
  Harness h;
  h.transport->Respond(200, R"({"kind":"Status","status":"Success"})");
  REQUIRE(h.client
              ->Delete(resources::kPods, "ns", "p",
                       {.propagation_policy = "Foreground", .precondition_uid = "u-1"})
              .ok());
  auto body = json::parse(h.transport->requests().at(0).body);
  CHECK(body["propagationPolicy"] == "Foreground");
  CHECK(body["preconditions"]["uid"] == "u-1");
}

}  // namespace
}  // namespace kiln::kube
