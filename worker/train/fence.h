// Fence: which gang may write a run's checkpoints.
//
// The operator gives each attempt of a TrainingJob a token, the job's UID and
// the attempt number (kiln-worker train --fence=UID:ATTEMPT; attempts only
// grow). Rank 0 keeps the newest token in the checkpoint location itself
// ("fence.json" beside the checkpoints), because the location is what two
// gangs can share: a member cluster cut off from the hub keeps running its
// gang while the hub restarts the job elsewhere, and both would write the
// same checkpoints. With the fence, the cut-off gang finds the newer token
// before its next checkpoint (or within --fence-check-seconds) and stops
// without writing: exit code Superseded.
//
// The storage has no compare-and-swap (files on a shared volume, S3
// objects), so a write of the old gang can still land between its last check
// and the new gang's claim. The fence's base step covers that: the claimer
// records the step it resumed from, and a restore passes over any checkpoint
// newer than the base that the holder did not write. A late stale write can
// cost progress, never correctness.
//
// Record: {"kind": "kiln.dev/checkpoint-fence", "version": 1, "job": UID,
// "attempt": N, "baseStep": S}.
#ifndef KILN_WORKER_TRAIN_FENCE_H_
#define KILN_WORKER_TRAIN_FENCE_H_

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/statusor.h"
#include "worker/train/checkpoint.h"
#include "worker/train/checkpoint_store.h"

namespace kiln::train {

struct Fence {
  CheckpointWriter holder;
  // The step the holder resumed from (0: a fresh start) or last wrote when
  // it took the fence over.
  int64_t base_step = 0;
};

std::string EncodeFence(const Fence& fence);
// DataLoss naming `where` for a record that is not a fence.
StatusOr<Fence> ParseFence(std::string_view text, const std::string& where);

// "UID:ATTEMPT" (the flag's form); InvalidArgument otherwise.
StatusOr<CheckpointWriter> ParseFenceToken(const std::string& text);

// Marks a gang that lost its fence to a newer attempt or another job (exit
// code Superseded).
class Superseded final : public StatusDetail {};
inline bool IsSuperseded(const Status& s) { return s.detail<Superseded>() != nullptr; }
// FailedPrecondition "superseded: <why>" marked Superseded.
Status SupersededError(const std::string& why);

// What a gang holding token `mine` does on finding `current` (nullopt: no
// fence yet). `starting`: at its start (a new job's UID then takes the
// location over, e.g. a job created again to resume the run) rather than
// while running (another UID there then means another job took it).
enum class FenceAction { kHold, kClaim, kStop };
FenceAction DecideFence(const std::optional<Fence>& current, const CheckpointWriter& mine,
                        bool starting);

// OK when a restore under `fence` may take the checkpoint `state`: written
// by the holder, or at or before the base step. Otherwise why not.
Status CheckWrittenUnder(const Fence& fence, const CheckpointState& state);

// Reads `store`'s fence; Superseded when DecideFence says stop. Returns the
// fence read (nullopt: none), for the restore's filter.
StatusOr<std::optional<Fence>> ReadFenceFor(CheckpointStore& store, const CheckpointWriter& mine,
                                            bool starting);

// Before a write and while running: OK while `mine` holds the fence;
// takes it over from an older attempt of the same job (with `base_step`, the
// newest step `mine` resumed from or wrote); Superseded otherwise.
Status KeepFence(CheckpointStore& store, const CheckpointWriter& mine, int64_t base_step);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_FENCE_H_
