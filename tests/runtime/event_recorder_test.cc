#include "runtime/event_recorder.h"

#include <catch2/catch.hpp>

#include "tests/kube/fake_transport.h"
#include "tests/support/fake_clock.h"

namespace kiln::runtime {
namespace {

using kube::json;
using kube::testing::FakeTransport;

const json kJob = {
    {"apiVersion", "kiln.dev/v1alpha1"},
    {"kind", "TrainingJob"},
    {"metadata",
     {{"name", "llama"}, {"namespace", "ml"}, {"uid", "u-1"}, {"resourceVersion", "7"}}}};

struct Fixture {
  Fixture() {
    auto t = std::make_unique<FakeTransport>();
    transport = t.get();
    kube::RestConfig config;
    config.server = "https://api";
    client = std::make_unique<kube::Client>(config, kube::ClientOptions{.qps = 0, .max_retries = 0},
                                            std::move(t), &clock);
  }
  kiln::testing::FakeClock clock;
  FakeTransport* transport;
  std::unique_ptr<kube::Client> client;
};

TEST_CASE("an event is created about the object, in its namespace", "[runtime][events]") {
  Fixture f;
  EventRecorder recorder(*f.client, {.component = "kiln-operator", .host = "op-0"}, &f.clock);
  f.transport->Respond(201, "{}");
  recorder.Record(kJob, EventType::kWarning, "GPUFailed", "node n1 lost GPU 3");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  auto reqs = f.transport->requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].path == "/api/v1/namespaces/ml/events");
  json ev = json::parse(reqs[0].body);
  CHECK(ev["involvedObject"] == json{{"apiVersion", "kiln.dev/v1alpha1"},
                                     {"kind", "TrainingJob"},
                                     {"name", "llama"},
                                     {"namespace", "ml"},
                                     {"uid", "u-1"},
                                     {"resourceVersion", "7"}});
  CHECK(ev["type"] == "Warning");
  CHECK(ev["reason"] == "GPUFailed");
  CHECK(ev["message"] == "node n1 lost GPU 3");
  CHECK(ev["count"] == 1);
  CHECK(ev["source"]["component"] == "kiln-operator");
  CHECK(ev["reportingInstance"] == "op-0");
  CHECK(ev["metadata"]["name"].get<std::string>().rfind("llama.", 0) == 0);
  CHECK(recorder.stats().created == 1);
}

TEST_CASE("repeats update one event's count, and a vanished event is recreated",
          "[runtime][events]") {
  Fixture f;
  EventRecorder recorder(*f.client, {}, &f.clock);
  f.transport->Respond(201, "{}");
  f.transport->Respond(200, "{}");
  f.transport->Respond(200, "{}");
  for (int i = 0; i < 3; ++i) recorder.Record(kJob, EventType::kNormal, "Scaled", "to 8 workers");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  auto reqs = f.transport->requests();
  REQUIRE(reqs.size() == 3);
  std::string name = json::parse(reqs[0].body)["metadata"]["name"];
  CHECK(reqs[1].method == "PATCH");
  CHECK(reqs[1].path == "/api/v1/namespaces/ml/events/" + name);
  CHECK(json::parse(reqs[1].body)["count"] == 2);
  CHECK(json::parse(reqs[2].body)["count"] == 3);
  CHECK(recorder.stats().aggregated == 2);

  // A different message is a different event.
  f.transport->Respond(201, "{}");
  recorder.Record(kJob, EventType::kNormal, "Scaled", "to 16 workers");
  // The server dropped the first event (TTL): the next repeat starts afresh.
  f.transport->Respond(404, R"({"kind":"Status","reason":"NotFound","code":404})");
  f.transport->Respond(201, "{}");
  recorder.Record(kJob, EventType::kNormal, "Scaled", "to 8 workers");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  reqs = f.transport->requests();
  REQUIRE(reqs.size() == 6);
  CHECK(reqs[3].method == "POST");
  CHECK(reqs[4].method == "PATCH");
  CHECK(reqs[5].method == "POST");
  CHECK(json::parse(reqs[5].body)["count"] == 1);

  // After the aggregation window a repeat is a new event too.
  f.clock.Advance(std::chrono::minutes(11));
  f.transport->Respond(201, "{}");
  recorder.Record(kJob, EventType::kNormal, "Scaled", "to 8 workers");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  CHECK(f.transport->requests().back().method == "POST");
  CHECK(recorder.stats().created == 4);
}

TEST_CASE("a hot loop cannot flood the API server", "[runtime][events]") {
  Fixture f;
  EventRecorder recorder(*f.client, {.object_burst = 3}, &f.clock);
  f.transport->Respond(201, "{}");
  f.transport->Respond(200, "{}");
  f.transport->Respond(200, "{}");
  for (int i = 0; i < 10; ++i) recorder.Record(kJob, EventType::kWarning, "Failed", "again");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  CHECK(f.transport->requests().size() == 3);
  CHECK(recorder.stats().dropped == 7);
  // The budget refills with time (one every 5 minutes).
  f.clock.Advance(std::chrono::minutes(5));
  f.transport->Respond(200, "{}");
  recorder.Record(kJob, EventType::kWarning, "Failed", "again");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  CHECK(f.transport->requests().size() == 4);
}

TEST_CASE("a failed write is counted, not retried forever, and cluster objects go to default",
          "[runtime][events]") {
  Fixture f;
  EventRecorder recorder(*f.client, {}, &f.clock);
  f.transport->Fail(Status::Unavailable("connection refused"));
  json node = {{"apiVersion", "v1"}, {"kind", "Node"}, {"metadata", {{"name", "n1"}}}};
  recorder.Record(node, EventType::kWarning, "GPUUnhealthy", "xid 79");
  REQUIRE(recorder.Flush(std::chrono::seconds(10)));
  CHECK(recorder.stats().write_errors == 1);
  CHECK(f.transport->requests()[0].path == "/api/v1/namespaces/default/events");
  CHECK(f.transport->pending() == 0);
}

}  // namespace
}  // namespace kiln::runtime
