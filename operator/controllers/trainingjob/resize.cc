#include "operator/controllers/trainingjob/resize.h"

#include "operator/placement/placement.h"
#include "operator/placement/trainingjob_gang.h"

namespace kiln::trainingjob {

ResizeDecision DecideResize(const api::v1alpha1::TrainingJob& job,
                            const std::vector<RankPlacement>& ranks, const std::string& holder,
                            placement::Snapshot fleet) {
  const auto current = static_cast<int32_t>(ranks.size());
  const int32_t asked = job.spec.workers.replicas;
  const std::string sizes = std::to_string(current) + " → ";
  if (current == 0 || current == asked) return {};
  if (current > asked) {
    // The API holds replicas within the elastic bounds and to a size that
    // splits the global batch: it is the size to run.
    return {.to = asked,
            .reason = "ScaleDown",
            .message = sizes + std::to_string(asked) +
                       " workers (spec.workers.replicas): the gang checkpoints and resumes "
                       "with " +
                       std::to_string(asked)};
  }
  auto gang = placement::FromTrainingJob(job);
  if (!gang.ok()) return {};
  if (gang->elastic) {
    gang->elastic->min_replicas = current + 1;
  } else {
    gang->replicas = asked;
  }
  // The gang's own workers would be free once it stops.
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    (void)fleet.RemovePod(ranks[rank].cluster,
                          placement::WorkerPodKey(holder, static_cast<int32_t>(rank)));
  }
  auto placed = placement::Place(*gang, fleet);
  if (!placed.ok()) {
    return {.waiting = "runs " + std::to_string(current) + " of the " + std::to_string(asked) +
                       " workers asked for; no room for more yet: " +
                       std::string(placed.status().message())};
  }
  return {.to = placed->replicas,
          .reason = "ScaleUp",
          .message = sizes + std::to_string(placed->replicas) + " workers (" +
                     std::to_string(asked) +
                     " asked for): the fleet has room; the gang checkpoints and resumes with " +
                     std::to_string(placed->replicas)};
}

}  // namespace kiln::trainingjob
