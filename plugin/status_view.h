// StatusView: the readable views `kubectl kiln status` and `watch` print —
// a TrainingJob's phase, progress, checkpoint, restarts and placement; a
// ModelDeployment's versions, weights, steps, analysis runs and rollbacks;
// one line per object for lists. Pure functions of the object as the API
// returns it (JSON) and the time now, so tests feed fixtures; fields the
// status does not have yet are left out or shown as "-". Thread-safe.
#ifndef KILN_PLUGIN_STATUS_VIEW_H_
#define KILN_PLUGIN_STATUS_VIEW_H_

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/command_line.h"

namespace kiln::plugin {

using TimePoint = std::chrono::system_clock::time_point;

std::string FormatTrainingJob(const nlohmann::json& job, TimePoint now);
std::string FormatModelDeployment(const nlohmann::json& md, TimePoint now);
// The view of `kind`.
std::string FormatObject(Kind kind, const nlohmann::json& object, TimePoint now);

// A table of `objects` (items of a list), with a NAMESPACE column when
// `with_namespace`; "No trainingjobs found in namespace "x"." when empty.
std::string FormatList(Kind kind, const std::vector<nlohmann::json>& objects, bool with_namespace,
                       const std::string& ns, TimePoint now);

// Whether `object` is in a phase `watch` stops at, and whether that phase
// is a success (TrainingJob Succeeded; ModelDeployment Healthy with no
// canary in progress).
bool IsTerminal(Kind kind, const nlohmann::json& object);
bool IsSuccess(Kind kind, const nlohmann::json& object);

// "45s", "12m", "3h4m", "2d5h": how long ago `rfc3339` was, or "" when it
// does not parse.
std::string Age(const std::string& rfc3339, TimePoint now);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_STATUS_VIEW_H_
