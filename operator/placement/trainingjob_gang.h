// FromTrainingJob: the Gang a TrainingJob asks placement for, field by field
// from its spec (workers, placement, elastic) and status (quarantinedNodes).
// In its own target (kiln_placement_api) so the engine itself stays free of
// the API types. Stateless; thread-safe.
#ifndef KILN_OPERATOR_PLACEMENT_TRAININGJOB_GANG_H_
#define KILN_OPERATOR_PLACEMENT_TRAININGJOB_GANG_H_

#include <cstdint>

#include "base/statusor.h"
#include "operator/api/v1alpha1/trainingjob.h"
#include "operator/placement/gang.h"

namespace kiln::placement {

// Maps `job` onto a Gang named "<namespace>/<name>". `priority` is the value
// of the worker pods' PriorityClass (spec.workers.priorityClassName), which
// the controller resolves; queue_order is left 0 for the caller to set (e.g.
// from the creation time). status.quarantinedNodes entries are taken as
// "cluster/node". InvalidArgument, naming the field, for a cpu or memory
// request that is not a Kubernetes quantity.
StatusOr<Gang> FromTrainingJob(const api::v1alpha1::TrainingJob& job, int32_t priority = 0);

// A Kubernetes quantity ("500m", "4", "1.5", "64Gi", "1e3", or a JSON number)
// in thousandths of its unit, rounded up: cpu "500m" → 500, memory "1Ki" →
// 1024000. InvalidArgument for anything else.
StatusOr<int64_t> ParseMilliQuantity(const nlohmann::json& quantity);

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_TRAININGJOB_GANG_H_
