// WindowSummary: kiln-router's per-(route, version) account of a recent
// window, in the form /debug/summary serves it (schema in docs/router.md):
// counts plus the window's request-duration and time-to-first-byte
// histograms over fixed log-spaced buckets, for live requests and, apart, for
// the copies mirrored to a version. Histograms and counts add up, so
// the summaries of several router replicas merge into the one a single
// router that saw all their requests would have served; quantiles are
// computed from the merged buckets by the same method the router uses. The
// router writes it; the operator's analysis reads and merges it. A plain
// value; not thread-safe.
#ifndef KILN_ROUTER_WINDOW_SUMMARY_H_
#define KILN_ROUTER_WINDOW_SUMMARY_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::router {

// The buckets, layout schema 1 (wire format: a change bumps kSchema). Bucket 0
// holds durations up to kBase; bucket b in 1..kCount-1 those from
// kBase·kRatio^(b-1) to kBase·kRatio^b, the last one (from ~608 s) also everything
// above.
struct LatencyBuckets {
  static constexpr int kSchema = 1;
  static constexpr int kCount = 72;
  static constexpr double kBase = 1e-4;  // 100 µs.
  static constexpr double kRatio = 1.25;

  // The bucket `seconds` falls in.
  static int Of(double seconds);
  // What a quantile that falls in bucket `b` reports: the bucket's geometric
  // middle (kBase/2 for bucket 0), so within 12% of every value it holds.
  static double Value(int b);
};

// Counts per bucket.
class LatencyHistogram {
 public:
  // `n` more observations in bucket `b` (0 <= b < kCount).
  void Add(int b, uint64_t n = 1);
  void Merge(const LatencyHistogram& other);
  uint64_t count() const { return total_; }
  uint64_t at(int b) const { return counts_[static_cast<size_t>(b)]; }

  // The value of the bucket holding the ceil(q·count)-th smallest
  // observation; 0 when empty. 0 < q <= 1.
  double Quantile(double q) const;

  // Sparse: [[bucket, count], ...], buckets ascending, empty ones left out.
  nlohmann::json ToJson() const;
  // InvalidArgument for anything but that (a bucket out of range, one twice,
  // a count that is not a non-negative integer).
  static StatusOr<LatencyHistogram> FromJson(const nlohmann::json& j);

  bool operator==(const LatencyHistogram&) const = default;

 private:
  std::array<uint64_t, LatencyBuckets::kCount> counts_{};
  uint64_t total_ = 0;
};

// One kind of request to one version in the window: the live requests
// clients sent it, or the copies of other versions' requests mirrored to it.
struct TrafficSummary {
  uint64_t requests = 0;  // Answered (client cancellations without a failure left out).
  uint64_t errors = 0;    // The backend's failures and 5xx answers.
  uint64_t tokens = 0;
  LatencyHistogram latency;      // Each request's duration; count() == requests.
  LatencyHistogram first_token;  // Time to first byte (a stream's first token), where one came.

  // Adds `other`'s counts and buckets.
  void Merge(const TrafficSummary& other);
  double ErrorRate() const;

  bool operator==(const TrafficSummary&) const = default;
};

// One version of one route in the window: its live requests (the fields
// every reader knows) and, apart, the mirrored copies it answered (their
// answers discarded, so they never reached a client).
struct VersionSummary : TrafficSummary {
  TrafficSummary mirrored;

  // Adds `other`'s live and mirrored counts and buckets.
  void Merge(const VersionSummary& other);

  bool operator==(const VersionSummary&) const = default;
};

struct WindowSummary {
  int window_seconds = 0;
  // By (route, version); route is "<namespace>/<ModelDeployment>".
  std::map<std::pair<std::string, std::string>, VersionSummary> versions;

  // /debug/summary's body (less what the server adds, e.g. "generation"):
  // the derived figures old readers use (errorRate, latencyP50, latencyP99,
  // timeToFirstTokenP50, timeToFirstToken, requestsPerSecond) beside the
  // counts and buckets they are derived from, and "buckets" naming the layout;
  // each version's mirrored copies in the same form under "mirrored".
  nlohmann::json ToJson() const;
  // Reads what ToJson writes, ignoring the derived figures. A version without
  // "mirrored" (a kiln-router from before mirrored copies were counted) had
  // none. InvalidArgument for a body that is not a summary, or one without
  // buckets (a kiln-router from before they were served); FailedPrecondition
  // for another bucket layout than this build's.
  static StatusOr<WindowSummary> FromJson(const nlohmann::json& j);

  // Adds `other`'s versions into this one's. InvalidArgument when the
  // windows differ in length.
  Status Merge(const WindowSummary& other);
};

}  // namespace kiln::router

#endif  // KILN_ROUTER_WINDOW_SUMMARY_H_
