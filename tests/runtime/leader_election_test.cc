#include "runtime/leader_election.h"

#include <catch2/catch.hpp>

namespace kiln::runtime {
namespace {

TEST_CASE("leader election timings are validated", "[runtime][leader]") {
  using std::chrono::seconds;
  CHECK(LeaderElector::Validate({"ns", "l", "me"}).ok());
  CHECK(LeaderElector::Validate({"ns", "l", ""}).code() == StatusCode::kInvalidArgument);
  CHECK(LeaderElector::Validate({.lease_namespace = "ns",
                                 .lease_name = "l",
                                 .identity = "me",
                                 .lease_duration = seconds(5),
                                 .renew_deadline = seconds(10)})
            .code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::runtime
