// RolloutAction: what `promote`, `abort`, `rollback` and `continue` write to
// a ModelDeployment — spec.rollout.action, through a merge patch, exactly as
// a GitOps commit changes it — and what the controller will make of it.
// The controller acts on an action once, when spec.rollout.action changes to
// it (status.handledAction), so writing the value already there does
// nothing; the plan says so instead of writing. Pure; thread-safe.
#ifndef KILN_PLUGIN_ROLLOUT_ACTION_H_
#define KILN_PLUGIN_ROLLOUT_ACTION_H_

#include <string>

#include <nlohmann/json.hpp>

#include "plugin/command_line.h"

namespace kiln::plugin {

struct ActionPlan {
  std::string action;    // Promote, Abort, Rollback or Continue.
  std::string previous;  // spec.rollout.action now (Continue when unset).
  bool write = false;    // Whether spec.rollout.action must change.
  // The merge patch: spec.rollout.action, with metadata.resourceVersion so
  // that it applies only to the object the plan was made from.
  std::string patch;
  // Why nothing is written, or what the controller will do with it.
  std::string note;
};

// The spec.rollout.action value of a verb (kPromote → "Promote").
std::string ActionOf(Verb verb);

// The plan for `verb` on ModelDeployment `md` as read from the API.
ActionPlan PlanAction(Verb verb, const nlohmann::json& md);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_ROLLOUT_ACTION_H_
