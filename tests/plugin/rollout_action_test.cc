#include "plugin/rollout_action.h"

#include <catch2/catch.hpp>

namespace kiln::plugin {
namespace {

using Catch::Contains;
using nlohmann::json;

// A ModelDeployment whose spec says `action` and whose status has acted on
// `handled`, with a canary or not.
json Md(const std::string& action, const std::string& handled, bool canary) {
  json md = {{"metadata", {{"name", "chat"}, {"resourceVersion", "77"}}},
             {"spec", {{"model", {{"version", "v3"}}}}},
             {"status", {{"stableVersion", "v2"}, {"handledActionGeneration", 4}}}};
  if (!action.empty()) md["spec"]["rollout"]["action"] = action;
  if (!handled.empty()) md["status"]["handledAction"] = handled;
  if (canary) md["status"]["canaryVersion"] = "v3";
  return md;
}

TEST_CASE("a changed action is written as a merge patch on the version read", "[plugin][actions]") {
  ActionPlan plan = PlanAction(Verb::kPromote, Md("", "", true));
  CHECK(plan.write);
  CHECK(plan.action == "Promote");
  CHECK(plan.previous == "Continue");  // Unset reads as Continue, as the controller reads it.
  CHECK(json::parse(plan.patch) ==
        json::parse(
            R"({"spec":{"rollout":{"action":"Promote"}},"metadata":{"resourceVersion":"77"}})"));
  CHECK_THAT(plan.note, Contains("v3 skips its remaining steps"));

  CHECK(PlanAction(Verb::kAbort, Md("Continue", "Continue", true)).note ==
        "v3 stops and v2 takes all traffic; it is not rolled out again until spec.model or the "
        "action changes");
  CHECK(ActionOf(Verb::kRollback) == "Rollback");
  CHECK(ActionOf(Verb::kContinue) == "Continue");
}

TEST_CASE("the same action again writes nothing and says why", "[plugin][actions]") {
  ActionPlan acted = PlanAction(Verb::kPromote, Md("Promote", "Promote", true));
  CHECK_FALSE(acted.write);
  CHECK(acted.patch.empty());
  CHECK_THAT(acted.note, Contains("already Promote and was acted on at generation 4"));
  CHECK_THAT(acted.note, Contains("kubectl kiln continue md chat"));

  ActionPlan pending = PlanAction(Verb::kAbort, Md("Abort", "Continue", true));
  CHECK_FALSE(pending.write);
  CHECK_THAT(pending.note, Contains("has not acted on it yet (last acted on: Continue)"));

  CHECK_FALSE(PlanAction(Verb::kContinue, Md("", "", false)).write);
}

TEST_CASE("what the controller will do follows the status", "[plugin][actions]") {
  CHECK_THAT(PlanAction(Verb::kPromote, Md("", "", false)).note,
             Contains("no rollout is in progress: the controller records the action"));
  json stopped = Md("Abort", "Abort", false);
  stopped["status"]["stoppedVersion"] = "v3";
  CHECK_THAT(PlanAction(Verb::kPromote, stopped).note,
             Contains("the stopped version v3 is promoted at once"));
  CHECK(PlanAction(Verb::kContinue, stopped).note == "v3 is rolled out again from the first step");
  CHECK(PlanAction(Verb::kAbort, Md("", "", false)).note ==
        "no rollout is in progress: nothing to abort");

  json promoted = Md("", "", false);
  promoted["status"]["previousVersion"] = "v1";
  CHECK_THAT(PlanAction(Verb::kRollback, promoted).note,
             Contains("traffic returns to the previous version v1 at once"));
  CHECK_THAT(PlanAction(Verb::kRollback, Md("", "", true)).note,
             Contains("v3 stops and v2 takes all traffic"));
  CHECK_THAT(PlanAction(Verb::kRollback, Md("", "", false)).note, Contains("RollbackImpossible"));
}

}  // namespace
}  // namespace kiln::plugin
