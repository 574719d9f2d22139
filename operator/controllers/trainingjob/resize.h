// Resizing a running gang: `kubectl scale tj` (spec.workers.replicas, the
// scale subresource) and elastic growth (spec.elastic).
//
// A gang runs at the size its placement gave it. When spec.workers.replicas
// asks for fewer workers, it shrinks at once; when it asks for more (a scale
// up, or an elastic job placed below its size while capacity was short), it
// grows only once the fleet has room: placement is asked, on a copy of the
// fleet in which the gang's own workers are free, for the largest allowed
// size above the current one. A running gang is never torn down for a size
// that does not fit.
//
// The reconciler carries a decision out like a suspension: the gang is
// deleted with the long grace period (each rank saves a checkpoint on
// SIGTERM), then placed again in the same attempt (a resize is no restart)
// and every rank resumes from the newest checkpoint. The global batch is
// kept at every size (each worker accumulates globalBatchSize /
// (microBatchSize x workers) micro-batches, and the loader reads the same
// sequences per optimizer step at any world size: worker/data/loader.h), so
// the loss curve does not depend on the resize.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RESIZE_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RESIZE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "operator/api/v1alpha1/trainingjob.h"
#include "operator/controllers/trainingjob/worker_pods.h"
#include "operator/placement/snapshot.h"

namespace kiln::trainingjob {

struct ResizeDecision {
  // The size to resize to; 0: stay.
  int32_t to = 0;
  // For the Resizing condition and the Event: ScaleDown or ScaleUp, and what
  // happens.
  std::string reason;
  std::string message;
  // When the gang runs below the size asked for and cannot grow yet: why
  // (the placement engine's reason), for Resizing=False WaitingForCapacity.
  std::string waiting;
};

// What the running gang of `job` on `ranks` (rank order; its workers held
// in `fleet` under placement::WorkerPodKey(holder, rank)) should do about
// spec.workers.replicas. `fleet` is a copy: the gang's own workers are taken
// out of it to ask placement what would fit.
ResizeDecision DecideResize(const api::v1alpha1::TrainingJob& job,
                            const std::vector<RankPlacement>& ranks, const std::string& holder,
                            placement::Snapshot fleet);

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RESIZE_H_
