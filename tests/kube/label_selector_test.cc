#include "kube/label_selector.h"

#include <catch2/catch.hpp>

namespace kiln::kube {
namespace {

bool Match(const std::string& selector, const nlohmann::json& labels) {
  auto s = LabelSelector::Parse(selector);
  REQUIRE(s.ok());
  return s->Matches(labels);
}

TEST_CASE("label selectors match as the API server matches them", "[kube][label_selector]") {
  const nlohmann::json labels = {{"app", "train"}, {"tier", "gpu"}, {"kiln.dev/job", "j1"}};
  CHECK(Match("", labels));
  CHECK(Match("app=train", labels));
  CHECK(Match("app==train", labels));
  CHECK_FALSE(Match("app=serve", labels));
  CHECK(Match("app!=serve", labels));
  CHECK_FALSE(Match("app!=train", labels));
  CHECK(Match("missing!=x", labels));  // An absent key satisfies !=.
  CHECK(Match("app in (serve, train)", labels));
  CHECK_FALSE(Match("app in (serve,eval)", labels));
  CHECK(Match("app notin (serve,eval)", labels));
  CHECK_FALSE(Match("app notin (train)", labels));
  CHECK(Match("missing notin (x)", labels));
  CHECK(Match("tier", labels));
  CHECK_FALSE(Match("missing", labels));
  CHECK(Match("!missing", labels));
  CHECK_FALSE(Match("!tier", labels));
  CHECK(Match("kiln.dev/job=j1", labels));
  // Requirements are ANDed; commas inside a set do not split requirements.
  CHECK(Match("app in (train,serve),tier=gpu, !missing", labels));
  CHECK_FALSE(Match("app in (train,serve),tier=cpu", labels));
  // No labels at all.
  CHECK(Match("!app", nullptr));
  CHECK_FALSE(Match("app", nlohmann::json::object()));
}

TEST_CASE("malformed label selectors are refused, naming the requirement",
          "[kube][label_selector]") {
  for (const char* bad : {"app in (a,b", "app in a,b)", "app in ()", "app within (a)", "a b=c",
                          "app=x y", ",", "!"}) {
    INFO(bad);
    auto s = LabelSelector::Parse(bad);
    CHECK(s.status().code() == StatusCode::kInvalidArgument);
  }
  CHECK_THAT(LabelSelector::Parse("app=ok,tier in ()").status().message(),
             Catch::Contains("tier in ()"));
}

TEST_CASE("a selector matches an object's metadata.labels", "[kube][label_selector]") {
  auto s = LabelSelector::Parse("app=train");
  REQUIRE(s.ok());
  CHECK(s->MatchesObject({{"metadata", {{"labels", {{"app", "train"}}}}}}));
  CHECK_FALSE(s->MatchesObject({{"metadata", {{"name", "x"}}}}));
  CHECK_FALSE(s->MatchesObject(nlohmann::json::object()));
}

}  // namespace
}  // namespace kiln::kube
