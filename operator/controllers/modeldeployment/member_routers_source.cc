#include "operator/controllers/modeldeployment/member_routers_source.h"

#include <algorithm>
#include <future>
#include <memory>
#include <optional>
#include <utility>

#include "base/context.h"

namespace kiln::modeldeployment {
namespace {

std::vector<std::string> SortedUnique(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

RouterReplicasOptions ThroughApiServer(RouterReplicasOptions options) {
  options.through_api_server = true;
  return options;
}

}  // namespace

MemberRoutersMetricsSource::MemberRoutersMetricsSource(fleet::Members& members,
                                                       std::vector<std::string> clusters,
                                                       RouterReplicasOptions options)
    : members_(members),
      clusters_(SortedUnique(std::move(clusters))),
      options_(ThroughApiServer(std::move(options))) {}

StatusOr<TrafficWindow> MemberRoutersMetricsSource::Window(const std::string& route,
                                                           int window_seconds) {
  KILN_ASSIGN_OR_RETURN(router::WindowSummary merged, Summary(window_seconds));
  return TrafficWindowOf(merged, route);
}

StatusOr<router::WindowSummary> MemberRoutersMetricsSource::Summary(int window_seconds) {
  if (clusters_.empty()) {
    return Status::Unavailable("no member cluster to read kiln-router windows from");
  }
  // The threads do not inherit the caller's Context, which bounds the
  // members' API calls: each is handed it.
  const Context* current = Context::Current();
  const Context caller = current != nullptr ? *current : Context();
  std::vector<std::future<StatusOr<router::WindowSummary>>> answers;
  answers.reserve(clusters_.size());
  for (const std::string& cluster : clusters_) {
    answers.push_back(std::async(std::launch::async, [this, &cluster, window_seconds, &caller] {
      ScopedContext scope(caller);
      return SummaryOf(cluster, window_seconds);
    }));
  }
  return MergeAnswers(
      answers, [&](size_t i) { return "member cluster " + clusters_[i]; },
      "member clusters' kiln-routers could not all be read, so part of the traffic is unknown");
}

StatusOr<router::WindowSummary> MemberRoutersMetricsSource::SummaryOf(const std::string& cluster,
                                                                      int window_seconds) {
  std::shared_ptr<fleet::Member> member = members_.Get(cluster);
  if (member == nullptr) return Status::Unavailable("not connected");
  RouterReplicasMetricsSource routers(member->client(), options_);
  return routers.Summary(window_seconds);
}

}  // namespace kiln::modeldeployment
