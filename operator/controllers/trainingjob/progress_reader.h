// ProgressReader: a running TrainingJob's training progress (step, losses,
// throughput, newest checkpoint) as rank 0 reports it. The production reader
// asks rank 0's `kiln-worker train` for its JSON /progress through the member
// API server's pod proxy, so the operator needs no network path to pods
// beyond the API servers it already talks to; unit tests use a fake.
// Implementations are thread-safe.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_PROGRESS_READER_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_PROGRESS_READER_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "operator/api/v1alpha1/trainingjob.h"
#include "operator/fleet/member.h"

namespace kiln::trainingjob {

// What rank 0 reports; fields it has no value for yet are empty.
struct TrainingProgress {
  int64_t step = 0;
  std::optional<double> loss;
  std::optional<double> validation_loss;
  std::optional<double> tokens_per_second;
  // The newest checkpoint this worker process wrote.
  std::optional<api::v1alpha1::CheckpointRef> last_checkpoint;
};

// kiln-worker's /progress body (worker/train/train_metrics.h).
// InvalidArgument for a body that is not such an object.
StatusOr<TrainingProgress> ParseProgress(const std::string& body);

// The progress a `kiln-worker train` container `container` of `pod` (a v1
// Pod as JSON) left in its termination message: "progress", the /progress
// object at its exit (worker/cmd/train_command.cc), so the final loss and
// the checkpoint written on the way out reach the status after the process
// is gone. None while the container runs, or when it wrote none.
std::optional<TrainingProgress> FinalProgress(const nlohmann::json& pod,
                                              const std::string& container);

// Copies what `progress` holds into `status` (step always; the others when
// present, so a value read before is kept).
void ApplyProgress(const TrainingProgress& progress, api::v1alpha1::TrainingJobStatus& status);

class ProgressReader {
 public:
  virtual ~ProgressReader() = default;
  // The progress of pod `pod` in namespace `ns` of `member`, served on its
  // port `port`. An error when the pod cannot be asked (not running yet, the
  // proxy refused) or answers nonsense.
  virtual StatusOr<TrainingProgress> Read(fleet::Member& member, const std::string& ns,
                                          const std::string& pod, int32_t port) = 0;
};

// GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/progress through the
// member's client (which needs `get` on pods/proxy there), all retries
// within 5 s (and within the caller's Context).
class PodProxyProgressReader final : public ProgressReader {
 public:
  StatusOr<TrainingProgress> Read(fleet::Member& member, const std::string& ns,
                                  const std::string& pod, int32_t port) override;
};

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_PROGRESS_READER_H_
