// ExitCode: how a kiln-worker process ends, and the contract the operator reads
// from a finished worker pod. Each code says what the operator should do next:
// retry the same work (possibly elsewhere) or stop and report to the user.
// The numeric values are part of the API; never renumber them.
#ifndef KILN_WORKER_EXIT_CODES_H_
#define KILN_WORKER_EXIT_CODES_H_

#include "base/status.h"

namespace kiln::worker {

enum class ExitCode : int {
  // The command finished its work.
  kSuccess = 0,
  // Something unexpected broke (a bug, an unclassified failure). Retryable.
  kInternalError = 1,
  // Bad flags or configuration. Retrying the same configuration cannot succeed.
  kConfigurationError = 2,
  // The machine under the worker failed: a GPU failed its probe, storage is
  // unavailable. Retryable, preferably on other nodes.
  kInfrastructureFault = 3,
  // A collective or a peer did not answer in time. Retryable.
  kCommunicationTimeout = 4,
  // Training diverged (NaN/Inf loss or gradients). Retryable from an earlier
  // checkpoint.
  kNumericsFault = 5,
  // Training data is missing or malformed. Retrying cannot succeed.
  kDataError = 6,
  // `kiln-worker eval`: the model was evaluated and missed a quality gate
  // (--min-accuracy, --max-perplexity). The rollout stops promoting it.
  kQualityGateFailed = 7,
  // `kiln-worker train`: a newer attempt of the job (or another job) holds
  // the checkpoint location's fence (worker/train/fence.h), so this gang
  // stopped without writing. Not retryable: the holder is the run now.
  kSuperseded = 8,
};

// The code's name as written in this file without the 'k', e.g. "DataError".
constexpr const char* ExitCodeName(ExitCode code) {
  switch (code) {
    case ExitCode::kSuccess:
      return "Success";
    case ExitCode::kInternalError:
      return "InternalError";
    case ExitCode::kConfigurationError:
      return "ConfigurationError";
    case ExitCode::kInfrastructureFault:
      return "InfrastructureFault";
    case ExitCode::kCommunicationTimeout:
      return "CommunicationTimeout";
    case ExitCode::kNumericsFault:
      return "NumericsFault";
    case ExitCode::kDataError:
      return "DataError";
    case ExitCode::kQualityGateFailed:
      return "QualityGateFailed";
    case ExitCode::kSuperseded:
      return "Superseded";
  }
  return "Unknown";
}

// The process exit status for `code`.
constexpr int ToInt(ExitCode code) { return static_cast<int>(code); }

// Whether the operator should run the work again after a worker ended with
// `code`: Internal, InfrastructureFault, CommunicationTimeout and
// NumericsFault (from a checkpoint) are retryable; the rest are terminal.
constexpr bool ExitCodeIsRetryable(ExitCode code) {
  switch (code) {
    case ExitCode::kInternalError:
    case ExitCode::kInfrastructureFault:
    case ExitCode::kCommunicationTimeout:
    case ExitCode::kNumericsFault:
      return true;
    default:
      return false;
  }
}

// The exit code for a failed command's status, by what the operator can do
// about it. What may go away by itself (Status::IsRetryable, the one retry
// policy: Unavailable, ResourceExhausted, DeadlineExceeded, Aborted) is an
// infrastructure fault; bad options (InvalidArgument) a configuration error;
// missing, unreadable or malformed data (NotFound, PermissionDenied,
// FailedPrecondition, DataLoss) a data error; anything else internal (which
// the operator still retries: an unclassified failure may not repeat on
// another node). Ok maps to success. Commands check their own details first
// (a numerics fault is a detail on the status, see worker/train/trainer.h).
inline ExitCode ExitCodeFor(const Status& status) {
  if (status.ok()) return ExitCode::kSuccess;
  if (status.IsRetryable()) return ExitCode::kInfrastructureFault;
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return ExitCode::kConfigurationError;
    case StatusCode::kNotFound:
    case StatusCode::kPermissionDenied:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kDataLoss:
      return ExitCode::kDataError;
    default:
      return ExitCode::kInternalError;
  }
}

}  // namespace kiln::worker

#endif  // KILN_WORKER_EXIT_CODES_H_
