#include "router/window_summary.h"

#include <cmath>
#include <string>
#include <vector>

namespace kiln::router {
namespace {

using nlohmann::json;

constexpr int kCount = LatencyBuckets::kCount;

// A non-negative integer field; InvalidArgument naming `what` otherwise.
StatusOr<uint64_t> Count(const json& j, const char* key, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) {
    return Status::InvalidArgument(what + ": \"" + key + "\" is not a count");
  }
  return it->get<uint64_t>();
}

StatusOr<std::string> Text(const json& j, const char* key, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string() || it->get<std::string>().empty()) {
    return Status::InvalidArgument(what + ": no \"" + key + "\"");
  }
  return it->get<std::string>();
}

// The counts, buckets and the figures derived from them, as /debug/summary
// serves one kind of traffic.
json TrafficJson(const TrafficSummary& t, int window_seconds) {
  return {{"requests", t.requests},
          {"errors", t.errors},
          {"errorRate", t.ErrorRate()},
          {"latencyP50", t.latency.Quantile(0.5)},
          {"latencyP99", t.latency.Quantile(0.99)},
          {"timeToFirstTokenP50", t.first_token.Quantile(0.5)},
          {"timeToFirstToken", t.first_token.Quantile(0.99)},
          {"tokens", t.tokens},
          {"requestsPerSecond",
           window_seconds > 0 ? static_cast<double>(t.requests) / window_seconds : 0.0},
          {"latencyBuckets", t.latency.ToJson()},
          {"timeToFirstTokenBuckets", t.first_token.ToJson()}};
}

// Reads what TrafficJson writes, ignoring the derived figures; errors name `what`.
StatusOr<TrafficSummary> ReadTraffic(const json& j, const std::string& what) {
  TrafficSummary t;
  KILN_ASSIGN_OR_RETURN(t.requests, Count(j, "requests", what));
  KILN_ASSIGN_OR_RETURN(t.errors, Count(j, "errors", what));
  KILN_ASSIGN_OR_RETURN(t.tokens, Count(j, "tokens", what));
  if (!j.contains("latencyBuckets") || !j.contains("timeToFirstTokenBuckets")) {
    return Status::InvalidArgument(what + ": no latencyBuckets or timeToFirstTokenBuckets");
  }
  StatusOr<LatencyHistogram> latency = LatencyHistogram::FromJson(j["latencyBuckets"]);
  StatusOr<LatencyHistogram> first = LatencyHistogram::FromJson(j["timeToFirstTokenBuckets"]);
  if (!latency.ok()) return Status::InvalidArgument(what + ": " + latency.status().message());
  if (!first.ok()) return Status::InvalidArgument(what + ": " + first.status().message());
  t.latency = *latency;
  t.first_token = *first;
  // The router puts every counted request in a latency bucket.
  if (t.latency.count() != t.requests || t.first_token.count() > t.requests ||
      t.errors > t.requests) {
    return Status::InvalidArgument(what + ": counts and buckets disagree");
  }
  return t;
}

}  // namespace

int LatencyBuckets::Of(double seconds) {
  if (!(seconds > kBase)) return 0;  // Also NaN.
  const double b = 1 + std::floor(std::log(seconds / kBase) / std::log(kRatio));
  return b < kCount ? static_cast<int>(b) : kCount - 1;
}

double LatencyBuckets::Value(int b) {
  if (b == 0) return kBase / 2;
  return kBase * std::pow(kRatio, b - 0.5);
}

void LatencyHistogram::Add(int b, uint64_t n) {
  counts_[static_cast<size_t>(b)] += n;
  total_ += n;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (size_t b = 0; b < counts_.size(); ++b) counts_[b] += other.counts_[b];
  total_ += other.total_;
}

double LatencyHistogram::Quantile(double q) const {
  if (total_ == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
  uint64_t seen = 0;
  for (size_t b = 0; b < counts_.size(); ++b) {
    seen += counts_[b];
    if (seen >= rank && counts_[b] > 0) return LatencyBuckets::Value(static_cast<int>(b));
  }
  return LatencyBuckets::Value(kCount - 1);
}

json LatencyHistogram::ToJson() const {
  json out = json::array();
  for (size_t b = 0; b < counts_.size(); ++b) {
    if (counts_[b] > 0) out.push_back(json::array({b, counts_[b]}));
  }
  return out;
}

StatusOr<LatencyHistogram> LatencyHistogram::FromJson(const json& j) {
  if (!j.is_array()) return Status::InvalidArgument("buckets are not an array");
  LatencyHistogram h;
  std::array<bool, kCount> seen{};
  for (const json& pair : j) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_unsigned() ||
        !pair[1].is_number_unsigned()) {
      return Status::InvalidArgument("bucket " + pair.dump() + " is not [index, count]");
    }
    const auto b = pair[0].get<uint64_t>();
    if (b >= static_cast<uint64_t>(kCount) || seen[b]) {
      return Status::InvalidArgument("bucket " + pair.dump() + " is out of range or repeated");
    }
    seen[b] = true;
    h.Add(static_cast<int>(b), pair[1].get<uint64_t>());
  }
  return h;
}

void TrafficSummary::Merge(const TrafficSummary& other) {
  requests += other.requests;
  errors += other.errors;
  tokens += other.tokens;
  latency.Merge(other.latency);
  first_token.Merge(other.first_token);
}

double TrafficSummary::ErrorRate() const {
  return requests > 0 ? static_cast<double>(errors) / static_cast<double>(requests) : 0.0;
}

void VersionSummary::Merge(const VersionSummary& other) {
  TrafficSummary::Merge(other);
  mirrored.Merge(other.mirrored);
}

json WindowSummary::ToJson() const {
  json versions_json = json::array();
  for (const auto& [key, v] : versions) {
    json entry = TrafficJson(v, window_seconds);
    entry["route"] = key.first;
    entry["version"] = key.second;
    entry["mirrored"] = TrafficJson(v.mirrored, window_seconds);
    versions_json.push_back(std::move(entry));
  }
  return {{"windowSeconds", window_seconds},
          {"buckets",
           {{"schema", LatencyBuckets::kSchema},
            {"base", LatencyBuckets::kBase},
            {"ratio", LatencyBuckets::kRatio},
            {"count", kCount}}},
          {"versions", std::move(versions_json)}};
}

StatusOr<WindowSummary> WindowSummary::FromJson(const json& j) {
  if (!j.is_object() || !j.contains("versions") || !j["versions"].is_array() ||
      !j.contains("windowSeconds") || !j["windowSeconds"].is_number_integer()) {
    return Status::InvalidArgument("not a kiln-router summary: " + j.dump().substr(0, 200));
  }
  auto layout = j.find("buckets");
  if (layout == j.end() || !layout->is_object()) {
    return Status::InvalidArgument(
        "the summary has no buckets (a kiln-router older than the bucketed summary?)");
  }
  if (layout->value("schema", 0) != LatencyBuckets::kSchema ||
      layout->value("count", 0) != kCount || layout->value("base", 0.0) != LatencyBuckets::kBase ||
      layout->value("ratio", 0.0) != LatencyBuckets::kRatio) {
    return Status::FailedPrecondition("the summary's bucket layout " + layout->dump() +
                                      " is not this build's (schema " +
                                      std::to_string(LatencyBuckets::kSchema) + ")");
  }
  WindowSummary out;
  out.window_seconds = j["windowSeconds"].get<int>();
  for (const json& v : j["versions"]) {
    if (!v.is_object()) return Status::InvalidArgument("a version is not an object");
    KILN_ASSIGN_OR_RETURN(std::string route, Text(v, "route", "a version"));
    KILN_ASSIGN_OR_RETURN(std::string version, Text(v, "version", route));
    const std::string what = route + " " + version;
    KILN_ASSIGN_OR_RETURN(TrafficSummary live, ReadTraffic(v, what));
    VersionSummary s{std::move(live)};
    // Absent from a kiln-router older than mirrored counts: it counted none.
    if (auto mirrored = v.find("mirrored"); mirrored != v.end()) {
      if (!mirrored->is_object())
        return Status::InvalidArgument(what + ": mirrored is not an object");
      KILN_ASSIGN_OR_RETURN(s.mirrored, ReadTraffic(*mirrored, what + " mirrored"));
    }
    auto [it, added] = out.versions.emplace(std::make_pair(route, version), s);
    if (!added) return Status::InvalidArgument(what + " is listed twice");
  }
  return out;
}

Status WindowSummary::Merge(const WindowSummary& other) {
  if (other.window_seconds != window_seconds) {
    return Status::InvalidArgument("windows of " + std::to_string(window_seconds) + " s and " +
                                   std::to_string(other.window_seconds) + " s do not merge");
  }
  for (const auto& [key, v] : other.versions) versions[key].Merge(v);
  return Status::Ok();
}

}  // namespace kiln::router
