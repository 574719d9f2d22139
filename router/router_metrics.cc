#include "router/router_metrics.h"

#include <array>
#include <vector>

#include <prometheus/text_serializer.h>

#include "router/window_summary.h"

namespace kiln::router {
namespace {

constexpr int kSlots = 600;  // Seconds of history: the longest window.
constexpr size_t kBuckets = LatencyBuckets::kCount;

const prometheus::Histogram::BucketBoundaries& PrometheusBuckets() {
  static const prometheus::Histogram::BucketBoundaries b{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return b;
}

// One second's requests of one kind.
struct Slot {
  int64_t second = -1;
  uint64_t requests = 0, errors = 0, tokens = 0;
  std::array<uint32_t, kBuckets> latency{};
  std::array<uint32_t, kBuckets> first_byte{};
};

// One kind of request's (live or mirrored) last kSlots seconds, a slot a
// second, allocated at the first request.
class SlotRing {
 public:
  // Counts a request ended at `now` that the window keeps.
  void Record(int64_t now, const RequestOutcome& o) {
    if (slots_.empty()) slots_.resize(kSlots);
    Slot& s = slots_[static_cast<size_t>(now % kSlots)];
    if (s.second != now) s = Slot{now};
    ++s.requests;
    if (o.error != nullptr) ++s.errors;
    s.tokens += o.tokens;
    ++s.latency[static_cast<size_t>(LatencyBuckets::Of(o.seconds))];
    if (o.first_byte_seconds >= 0) {
      ++s.first_byte[static_cast<size_t>(LatencyBuckets::Of(o.first_byte_seconds))];
    }
  }

  // Adds the seconds from `now - window_seconds` to `now` into `out`.
  void AddTo(TrafficSummary& out, int64_t now, int window_seconds) const {
    if (slots_.empty()) return;
    for (int64_t sec = now - window_seconds; sec <= now; ++sec) {
      if (sec < 0) continue;
      const Slot& s = slots_[static_cast<size_t>(sec % kSlots)];
      if (s.second != sec) continue;
      out.requests += s.requests;
      out.errors += s.errors;
      out.tokens += s.tokens;
      for (size_t b = 0; b < kBuckets; ++b) {
        if (s.latency[b] > 0) out.latency.Add(static_cast<int>(b), s.latency[b]);
        if (s.first_byte[b] > 0) out.first_token.Add(static_cast<int>(b), s.first_byte[b]);
      }
    }
  }

 private:
  std::vector<Slot> slots_;
};

}  // namespace

class RouterMetrics::Version {
 public:
  std::string route, version;
  prometheus::Histogram* duration = nullptr;
  prometheus::Histogram* first_byte = nullptr;
  prometheus::Counter* tokens = nullptr;
  prometheus::Gauge* in_flight = nullptr;
  prometheus::Counter* cancelled = nullptr;

  std::mutex mu;
  std::map<int, prometheus::Counter*> by_code;           // Guarded by mu.
  std::map<std::string, prometheus::Counter*> by_error;  // Guarded by mu.
  std::map<std::string, prometheus::Counter*> mirrors;   // Guarded by mu.
  SlotRing live;                                         // Guarded by mu.
  SlotRing mirrored;                                     // Guarded by mu.
};

RouterMetrics::RouterMetrics(std::function<int64_t()> now_seconds)
    : now_(now_seconds ? std::move(now_seconds)
                       : [] {
                           return static_cast<int64_t>(
                               std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
                         }),
      registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("kiln_router_requests_total")
                    .Help("Requests answered, by route (ModelDeployment), version and status code.")
                    .Register(*registry_)),
      errors_(prometheus::BuildCounter()
                  .Name("kiln_router_errors_total")
                  .Help("Requests that failed, by route, version and kind of failure.")
                  .Register(*registry_)),
      duration_(prometheus::BuildHistogram()
                    .Name("kiln_router_request_duration_seconds")
                    .Help("From the request read to the last byte of the response.")
                    .Register(*registry_)),
      first_byte_(prometheus::BuildHistogram()
                      .Name("kiln_router_time_to_first_byte_seconds")
                      .Help("From the request read to the backend's first body byte (a streamed "
                            "completion's first token).")
                      .Register(*registry_)),
      tokens_(prometheus::BuildCounter()
                  .Name("kiln_router_tokens_total")
                  .Help("Generated tokens passed back: streamed events carrying data, or a whole "
                        "reply's usage.completion_tokens.")
                  .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("kiln_router_in_flight")
                     .Help("Requests being proxied now.")
                     .Register(*registry_)),
      cancelled_(prometheus::BuildCounter()
                     .Name("kiln_router_client_cancelled_total")
                     .Help("Requests whose client went away before the response ended.")
                     .Register(*registry_)),
      mirrored_(prometheus::BuildCounter()
                    .Name("kiln_router_mirror_requests_total")
                    .Help("Mirrored copies of requests, by the version they went to and result; "
                          "their answers are discarded.")
                    .Register(*registry_)),
      generation_(prometheus::BuildGauge()
                      .Name("kiln_router_config_generation")
                      .Help("Generation of the route table in use.")
                      .Register(*registry_)
                      .Add({})),
      routes_(prometheus::BuildGauge()
                  .Name("kiln_router_routes")
                  .Help("Routes (ModelDeployments) in the route table in use.")
                  .Register(*registry_)
                  .Add({})),
      weights_(prometheus::BuildGauge()
                   .Name("kiln_router_route_weight")
                   .Help("Percent of a route's traffic the route table in use gives a version.")
                   .Register(*registry_)) {}

RouterMetrics::~RouterMetrics() = default;

RouterMetrics::Version* RouterMetrics::For(const std::string& route, const std::string& version) {
  const auto key = std::make_pair(route, version);
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = versions_.find(key);
    if (it != versions_.end()) return it->second.get();
  }
  std::unique_lock<std::shared_mutex> lock(mu_);
  std::unique_ptr<Version>& v = versions_[key];
  if (!v) {
    v = std::make_unique<Version>();
    v->route = route;
    v->version = version;
    const prometheus::Labels labels{{"route", route}, {"version", version}};
    v->duration = &duration_.Add(labels, PrometheusBuckets());
    v->first_byte = &first_byte_.Add(labels, PrometheusBuckets());
    v->tokens = &tokens_.Add(labels);
    v->in_flight = &in_flight_.Add(labels);
    v->cancelled = &cancelled_.Add(labels);
  }
  return v.get();
}

void RouterMetrics::BeginRequest(Version* v) { v->in_flight->Increment(); }

void RouterMetrics::EndRequest(Version* v, const RequestOutcome& o) {
  v->in_flight->Decrement();
  v->duration->Observe(o.seconds);
  if (o.first_byte_seconds >= 0) v->first_byte->Observe(o.first_byte_seconds);
  if (o.tokens > 0) v->tokens->Increment(static_cast<double>(o.tokens));
  if (o.client_cancelled) v->cancelled->Increment();
  const bool failed = o.error != nullptr;
  const int64_t now = now_();
  std::lock_guard<std::mutex> lock(v->mu);
  if (o.status != 0) {
    prometheus::Counter*& c = v->by_code[o.status];
    if (c == nullptr) {
      c = &requests_.Add(
          {{"route", v->route}, {"version", v->version}, {"code", std::to_string(o.status)}});
    }
    c->Increment();
  }
  if (failed) {
    prometheus::Counter*& c = v->by_error[o.error];
    if (c == nullptr) {
      c = &errors_.Add({{"route", v->route}, {"version", v->version}, {"kind", o.error}});
    }
    c->Increment();
  }
  if (o.client_cancelled && !failed) return;  // Not the version's doing: left out of the window.
  v->live.Record(now, o);
}

void RouterMetrics::Rejected(const std::string& route, const char* kind, int status) {
  requests_.Add({{"route", route}, {"version", ""}, {"code", std::to_string(status)}}).Increment();
  errors_.Add({{"route", route}, {"version", ""}, {"kind", kind}}).Increment();
}

void RouterMetrics::Mirrored(Version* v, const RequestOutcome& o) {
  const char* result = o.error != nullptr ? o.error : o.client_cancelled ? "cancelled" : "ok";
  const int64_t now = now_();
  std::lock_guard<std::mutex> lock(v->mu);
  prometheus::Counter*& c = v->mirrors[result];
  if (c == nullptr) {
    c = &mirrored_.Add({{"route", v->route}, {"version", v->version}, {"result", result}});
  }
  c->Increment();
  if (o.client_cancelled && o.error == nullptr)
    return;  // Cut short by the router, not the version.
  v->mirrored.Record(now, o);
}

void RouterMetrics::SetConfig(const RouteConfig& config) {
  std::lock_guard<std::mutex> lock(config_mu_);
  generation_.Set(static_cast<double>(config.generation));
  routes_.Set(static_cast<double>(config.routes.size()));
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Gauge*> next;
  for (const Route& route : config.routes) {
    for (const VersionRoute& version : route.versions) {
      auto key = std::make_tuple(route.name, version.name, version.role);
      auto it = weight_series_.find(key);
      prometheus::Gauge* gauge =
          it != weight_series_.end()
              ? it->second
              : &weights_.Add(
                    {{"route", route.name}, {"version", version.name}, {"role", version.role}});
      gauge->Set(version.weight);
      next[key] = gauge;
    }
  }
  // A version that left the table (scaled down, or its route deleted) stops
  // being reported rather than staying at its last weight.
  for (const auto& [key, gauge] : weight_series_) {
    if (next.count(key) == 0) weights_.Remove(gauge);
  }
  weight_series_ = std::move(next);
}

std::string RouterMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

nlohmann::json RouterMetrics::Summary(int window_seconds) const {
  if (window_seconds < 1) window_seconds = 1;
  if (window_seconds > kSlots - 1) window_seconds = kSlots - 1;
  const int64_t now = now_();
  WindowSummary summary;
  summary.window_seconds = window_seconds;
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (const auto& [key, v] : versions_) {
    VersionSummary& out = summary.versions[key];
    std::lock_guard<std::mutex> vlock(v->mu);
    // The current second is still filling: the window is the last whole
    // `window_seconds` plus it.
    v->live.AddTo(out, now, window_seconds);
    v->mirrored.AddTo(out.mirrored, now, window_seconds);
  }
  return summary.ToJson();
}

}  // namespace kiln::router
