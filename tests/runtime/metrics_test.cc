#include "runtime/metrics.h"

#include <memory>
#include <thread>

#include <catch2/catch.hpp>

#include "runtime/controller.h"

namespace kiln::runtime {
namespace {

// The value of one exposition line, e.g. `name{labels} 3`; -1 when absent.
double Sample(const std::string& text, const std::string& series) {
  size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      return std::stod(text.substr(pos + series.size() + 1));
    }
    ++pos;
  }
  return -1;
}

class OutcomeReconciler final : public Reconciler {
 public:
  StatusOr<Result> Reconcile(const Context&, const Request& r) override {
    if (r.name == "bad") return Status::Unavailable("try later");
    if (r.name == "never") return Terminal(Status::InvalidArgument("bad spec"));
    if (r.name == "again") return Result{std::chrono::hours(1)};
    return Result{};
  }
};

TEST_CASE("a controller exports reconcile outcomes, latency and its queue", "[runtime][metrics]") {
  Metrics metrics;
  OutcomeReconciler reconciler;
  {
    Controller c("demo", reconciler,
                 {.workers = 2, .queue = {.base_backoff = std::chrono::hours(1)}}, &metrics);
    for (const char* key : {"ns/ok", "ns/bad", "ns/never", "ns/again", "ns/ok"}) c.queue().Add(key);
    c.Start();
    for (int i = 0; i < 500 && c.stats().reconciles < 4; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    c.Stop();
  }
  std::string text = metrics.Scrape();
  INFO(text);
  CHECK(Sample(text, R"(controller_runtime_reconcile_total{controller="demo",result="success"})") ==
        1);
  CHECK(Sample(text, R"(controller_runtime_reconcile_total{controller="demo",result="error"})") ==
        1);
  CHECK(
      Sample(text,
             R"(controller_runtime_reconcile_total{controller="demo",result="terminal_error"})") ==
      1);
  CHECK(Sample(text,
               R"(controller_runtime_reconcile_total{controller="demo",result="requeue_after"})") ==
        1);
  CHECK(Sample(text, R"(controller_runtime_reconcile_errors_total{controller="demo"})") == 1);
  CHECK(Sample(text, R"(controller_runtime_terminal_reconcile_errors_total{controller="demo"})") ==
        1);
  CHECK(Sample(text, R"(controller_runtime_reconcile_time_seconds_count{controller="demo"})") == 4);
  CHECK(Sample(text, R"(controller_runtime_max_concurrent_reconciles{controller="demo"})") == 2);
  CHECK(Sample(text, R"(controller_runtime_active_workers{controller="demo"})") == 0);
  // Five adds (one deduplicated), one rate-limited retry, four keys worked.
  CHECK(Sample(text, R"(workqueue_adds_total{name="demo"})") == 5);
  CHECK(Sample(text, R"(workqueue_retries_total{name="demo"})") == 1);
  CHECK(Sample(text, R"(workqueue_queue_duration_seconds_count{name="demo"})") == 4);
  CHECK(Sample(text, R"(workqueue_work_duration_seconds_count{name="demo"})") == 4);
  CHECK(text.find("# TYPE workqueue_depth gauge") != std::string::npos);
}

TEST_CASE("the queue depth is read at scrape time", "[runtime][metrics]") {
  Metrics metrics;
  OutcomeReconciler reconciler;
  Controller c("idle", reconciler, {}, &metrics);
  c.queue().Add("a");
  c.queue().Add("b");
  CHECK(Sample(metrics.Scrape(), R"(workqueue_depth{name="idle"})") == 2);
}

// A Metrics outlives its controllers (Metrics::Global() in the operator, a
// test's controllers made one after another): a scrape reads the queue of
// the newest controller of a name, and none once it is gone (ASan found the
// scrape reading a destroyed controller's queue).
TEST_CASE("the depth is read from the live controller of a name, never a destroyed one",
          "[runtime][metrics]") {
  Metrics metrics;
  OutcomeReconciler reconciler;
  auto depth = [&] { return Sample(metrics.Scrape(), R"(workqueue_depth{name="same"})"); };
  auto first = std::make_unique<Controller>("same", reconciler, ControllerOptions{}, &metrics);
  for (const char* key : {"a", "b", "c"}) first->queue().Add(key);
  CHECK(depth() == 3);
  auto second = std::make_unique<Controller>("same", reconciler, ControllerOptions{}, &metrics);
  second->queue().Add("x");
  CHECK(depth() == 1);
  first.reset();  // The older one going leaves the newer one's depth alone.
  CHECK(depth() == 1);
  second.reset();
  CHECK(depth() == 0);
  // Its counters stay.
  CHECK(Sample(metrics.Scrape(), R"(workqueue_adds_total{name="same"})") == 4);
}

TEST_CASE("API requests are counted and timed by host, verb and code", "[runtime][metrics]") {
  Metrics metrics;
  metrics.ObserveRequest({.host = "https://a:6443",
                          .method = "GET",
                          .code = 200,
                          .latency = std::chrono::milliseconds(20)});
  metrics.ObserveRequest({.host = "https://a:6443",
                          .method = "GET",
                          .code = 200,
                          .latency = std::chrono::milliseconds(40)});
  metrics.ObserveRequest({.host = "https://a:6443", .method = "PUT", .code = 409});
  metrics.ObserveRequest({.host = "https://b:6443", .method = "WATCH", .code = 0});
  std::string text = metrics.Scrape();
  INFO(text);
  CHECK(Sample(text,
               R"(rest_client_requests_total{code="200",host="https://a:6443",method="GET"})") ==
        2);
  CHECK(Sample(text,
               R"(rest_client_requests_total{code="409",host="https://a:6443",method="PUT"})") ==
        1);
  CHECK(Sample(
            text,
            R"(rest_client_requests_total{code="<error>",host="https://b:6443",method="WATCH"})") ==
        1);
  CHECK(
      Sample(
          text,
          R"(rest_client_request_duration_seconds_count{code="200",host="https://a:6443",verb="GET"})") ==
      2);
  CHECK(
      Sample(
          text,
          R"(rest_client_request_duration_seconds_sum{code="200",host="https://a:6443",verb="GET"})") ==
      Approx(0.06));
  CHECK(
      Sample(
          text,
          R"(rest_client_request_duration_seconds_bucket{code="200",host="https://a:6443",verb="GET",le="0.025"})") ==
      1);
}

TEST_CASE("leadership is a 0/1 gauge per lease", "[runtime][metrics]") {
  Metrics metrics;
  metrics.SetLeader("kiln-operator", true);
  CHECK(Sample(metrics.Scrape(), R"(leader_election_master_status{name="kiln-operator"})") == 1);
  metrics.SetLeader("kiln-operator", false);
  CHECK(Sample(metrics.Scrape(), R"(leader_election_master_status{name="kiln-operator"})") == 0);
}

}  // namespace
}  // namespace kiln::runtime
