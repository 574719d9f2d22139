#include "plugin/rollout_action.h"

namespace kiln::plugin {
namespace {

using nlohmann::json;

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// What the controller does when the action changes to `action`, read from
// the status as the reconciler reads it (operator/controllers/
// modeldeployment/reconciler.cc, HandleAction).
std::string Effect(const std::string& action, const json& md) {
  const json st = md.value("status", json::object());
  const std::string canary = Str(st, "canaryVersion"), stable = Str(st, "stableVersion");
  const std::string previous = Str(st, "previousVersion"), stopped = Str(st, "stoppedVersion");
  const std::string model =
      Str(md.value("spec", json::object()).value("model", json::object()), "version");
  if (action == "Promote") {
    if (!canary.empty()) {
      return canary + " skips its remaining steps and takes all traffic once it is fully ready";
    }
    if (!stopped.empty() && stopped == model) {
      return "the stopped version " + stopped + " is promoted at once, without steps";
    }
    return "no rollout is in progress: the controller records the action and does nothing; the "
           "next model change still starts at step 0";
  }
  if (action == "Abort") {
    if (!canary.empty()) {
      return canary + " stops and " + (stable.empty() ? "the stable version" : stable) +
             " takes all traffic; it is not rolled out again until spec.model or the action "
             "changes";
    }
    return "no rollout is in progress: nothing to abort";
  }
  if (action == "Rollback") {
    if (!previous.empty()) {
      return "traffic returns to the previous version " + previous +
             " at once (as soon as it has a ready replica)";
    }
    if (!canary.empty()) {
      return canary + " stops and " + (stable.empty() ? "the stable version" : stable) +
             " takes all traffic";
    }
    return "no previous version is warm (nothing was promoted, or scaleDownDelay has passed): the "
           "controller records RollbackImpossible; change spec.model to roll back through a canary";
  }
  if (!stopped.empty() && stopped == model) {
    return stopped + " is rolled out again from the first step";
  }
  return "the rollout follows its steps (nothing is stopped to retry)";
}

}  // namespace

std::string ActionOf(Verb verb) {
  switch (verb) {
    case Verb::kPromote:
      return "Promote";
    case Verb::kAbort:
      return "Abort";
    case Verb::kRollback:
      return "Rollback";
    default:
      return "Continue";
  }
}

ActionPlan PlanAction(Verb verb, const json& md) {
  ActionPlan plan;
  plan.action = ActionOf(verb);
  const json spec = md.value("spec", json::object());
  const json st = md.value("status", json::object());
  plan.previous = Str(spec.value("rollout", json::object()), "action");
  if (plan.previous.empty()) plan.previous = "Continue";
  std::string handled = Str(st, "handledAction");
  if (handled.empty()) handled = "Continue";

  if (plan.previous == plan.action) {
    if (plan.action == "Continue") {
      plan.note = "spec.rollout.action is already Continue; nothing written.";
    } else if (handled == plan.action) {
      const std::string name = Str(md.value("metadata", json::object()), "name");
      plan.note = "spec.rollout.action is already " + plan.action + " and was acted on" +
                  (st.contains("handledActionGeneration")
                       ? " at generation " + st["handledActionGeneration"].dump()
                       : std::string()) +
                  "; nothing written. An action acts once, when it changes: to act again, set "
                  "another first (kubectl kiln continue md " +
                  name + "), wait until `kubectl kiln status md " + name +
                  "` shows it acted on, then run this again.";
    } else {
      plan.note =
          "spec.rollout.action is already " + plan.action +
          "; nothing written. The controller has not acted on it yet (last acted on: " + handled +
          ").";
    }
    return plan;
  }
  plan.write = true;
  json patch = {{"spec", {{"rollout", {{"action", plan.action}}}}}};
  const json meta = md.value("metadata", json::object());
  if (meta.contains("resourceVersion"))
    patch["metadata"]["resourceVersion"] = meta["resourceVersion"];
  plan.patch = patch.dump();
  plan.note = Effect(plan.action, md);
  return plan;
}

}  // namespace kiln::plugin
