// TrainingJobReconciler: from a TrainingJob in the hub to a training gang on
// the member clusters, restarted as a whole from the last checkpoint when a
// worker fails. Level-based and idempotent: every decision lives in the
// job's status before it is acted on, so a restarted or newly elected
// operator continues where the last one stopped.
//
// One reconcile:
//  1. A job being deleted: its pods and Services are deleted in every member
//     (found by the job-UID label; owner references do not cross clusters),
//     then the finalizer kiln.dev/cleanup comes off; a member not connected
//     or not answering is waited for only when the job's status names it.
//     Otherwise the finalizer goes on first.
//  2. Finished (Succeeded, Failed) or suspended jobs run no pods. A
//     finished job with ttlSecondsAfterFinished is deleted that long after
//     its completionTime. spec.suspend stops the gang (each rank saves a
//     checkpoint on SIGTERM, within kSuspendGraceSeconds); clearing it
//     re-places the gang, once the old pods are gone, in the same attempt
//     (a suspension is no restart), resuming from the newest checkpoint.
//  3. Without a placement for the current attempt, the placement engine
//     places the whole gang on the fleet's capacity view and holds it there
//     (CapacityView::PlaceAndHold, under the job's UID and attempt) until
//     the workers' pods are bound and count for themselves; the decision is
//     written to status.placement (per cluster, each worker's node in rank
//     order), or Scheduled=False with the engine's reason. The hold goes
//     when the write fails, the attempt is abandoned (restart, failure,
//     suspension) or the job finishes or is deleted. A new operator rebuilds
//     every placed, not yet running job's hold from the hub's TrainingJobs
//     before it places anything, and each reconcile of a job being created
//     (phase Scheduled) holds again what its pods do not yet count for.
//  4. The attempt's Services and gated pods (worker_pods.h) are created in
//     their members; once all exist, the gates are lifted and the members'
//     schedulers bind them to the chosen nodes. With spec.storage.s3, the
//     credentials Secret (in the job's namespace in the hub) must exist and
//     hold the keys before any pod is made (else CredentialsReady=False,
//     naming the Secret and key, with an Event); members other than the hub
//     get a copy of it, labelled with the job's UID, kept equal to the hub's
//     on every reconcile and deleted with the job's pods.
//  5. The pods' states become the status (readyWorkers, phase). A failed
//     worker is classified (failure_classifier.h) and the policy decides
//     (failure_policy.h): Restart deletes the attempt's pods, records the
//     restart and clears the placement, so the next reconcile re-places the
//     gang (away from unready and quarantined nodes) after the backoff and
//     every rank resumes from the newest intact checkpoint; Fail ends the
//     job.
//  6. A restart for a hardware fault may quarantine the node
//     (failurePolicy.nodeQuarantine): the kiln.dev/quarantined:NoSchedule
//     taint on it in its member, ending with the window
//     (fleet/quarantine.h), and an entry in status.quarantinedNodes that this
//     job's placement avoids until the window passes.
//  7. While the gang runs, rank 0's training progress (progress_reader.h:
//     step, losses, tokens/s, newest checkpoint) is copied into the status
//     every `progress_interval`.
//  8. A running gang is resized when spec.workers.replicas (kubectl scale)
//     asks for fewer workers, or for more and the fleet has room — an
//     elastic job placed below its size grows as capacity frees, looked at
//     every `grow_interval` (resize.h). Phase Resizing: the gang checkpoints
//     and goes (as for a suspension), then is placed again in the same
//     attempt at the new size and resumes from the newest checkpoint; the
//     Resizing condition says why, and while a gang runs below the size
//     asked for, why it cannot grow yet.
//  9. A member cluster the MemberCluster controller declares Unreachable
//     (or whose MemberCluster is gone) has lost the gang's workers there:
//     the whole gang restarts at once, without the backoff, and is placed on
//     the clusters that answer. What the lost cluster still holds of earlier
//     attempts is deleted once it answers again (SweepLostClusters), so a
//     cluster that comes back runs no stale workers.
// A failure that a failurePolicy rule Ignores does not count: that worker is
// left as it ended, the others are still watched, and the job succeeds once
// every worker has finished or ended with an ignored failure.
// Events (placement, restarts with their reason, recovery, quarantine,
// suspension, completion) go to the job; metrics to `metrics` (metrics.h).
// The workers' events in the members wake the job's reconcile (JobOfWorker,
// wired by whoever runs the controller); an active job is also requeued
// every `resync`, for what no pod event shows (a member declared
// Unreachable, progress).
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RECONCILER_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RECONCILER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kube/client.h"
#include "operator/api/v1alpha1/trainingjob.h"
#include "operator/controllers/storage/s3_access.h"
#include "operator/controllers/trainingjob/metrics.h"
#include "operator/controllers/trainingjob/progress_reader.h"
#include "operator/controllers/trainingjob/resize.h"
#include "operator/controllers/trainingjob/worker_pods.h"
#include "operator/fleet/capacity_view.h"
#include "operator/fleet/members.h"
#include "operator/placement/snapshot.h"
#include "runtime/event_recorder.h"
#include "runtime/reconcile.h"

namespace kiln::trainingjob {

inline constexpr const char* kFinalizer = "kiln.dev/cleanup";
// How long workers get after SIGTERM: a failed gang's briefly (the restart
// should not wait; rank 0 still saves what it can), a suspended one's long
// enough to write a checkpoint.
inline constexpr int64_t kFailedGangGraceSeconds = 5;
inline constexpr int64_t kSuspendGraceSeconds = 30;
// How often a finished job looks again for a lost member cluster that still
// holds earlier attempts' workers.
inline constexpr std::chrono::seconds kLostClusterRetry{30};

struct TrainingJobReconcilerOptions {
  SharedVolume volume;
  // The MemberCluster that is the hub itself, if any: objects there get
  // owner references to the job.
  std::string hub_member;
  // How often an active job is looked at again.
  std::chrono::milliseconds resync{std::chrono::seconds(3)};
  // How long a job that cannot be placed waits before the next try; also
  // the longest a job with S3 storage goes without reading its credentials
  // Secret again (Secrets are not watched), so a rotation reaches the
  // members' copies within it.
  std::chrono::milliseconds unschedulable_retry{std::chrono::seconds(10)};
  // How long a released gang's pod may stay refused by its member's
  // scheduler (PodScheduled False, Unschedulable: the node kiln placed it on
  // has no room after all) before the gang is placed again, in the same
  // attempt: no worker has started, so it is no restart.
  std::chrono::milliseconds refused_timeout{std::chrono::seconds(30)};
  // Reads rank 0's progress; none leaves the progress fields alone. Must
  // outlive the reconciler.
  ProgressReader* progress_reader = nullptr;
  // How often a gang running below the size asked for looks for room to
  // grow, and how long it runs at one size before it grows (each resize
  // costs a checkpoint and a restart of every rank).
  std::chrono::milliseconds grow_interval{std::chrono::seconds(30)};
  // How often a running job's progress is read (at most; a reconcile reads
  // it when this much time has passed since the last read).
  std::chrono::milliseconds progress_interval{std::chrono::seconds(15)};
  // How many of a gang's pods are created (and their scheduling gates
  // lifted) at once: one API request each, so a 512-worker gang is not 512
  // round trips one after another. The member client's rate limit
  // (--kube-api-qps, --kube-api-burst) still applies. 1: one at a time.
  int create_parallelism = 16;
  // Where the controller's metrics go; none keeps no metrics. Must outlive
  // the reconciler.
  TrainingJobMetrics* metrics = nullptr;
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

// The job (in the hub, by namespace and name) that a worker pod in a member
// belongs to, from its labels; none for another pod. For waking the
// controller on its workers' events (fleet::Fleet::OnMemberPod).
std::optional<runtime::Request> JobOfWorker(const nlohmann::json& pod);

class TrainingJobReconciler final : public runtime::Reconciler {
 public:
  // `hub`, `members`, `capacity` (the fleet as placement sees it, where
  // decisions are held) and `events` (optional) must outlive the reconciler.
  TrainingJobReconciler(kube::Client& hub, fleet::Members& members, fleet::CapacityView& capacity,
                        runtime::EventRecorder* events, TrainingJobReconcilerOptions options);

  StatusOr<runtime::Result> Reconcile(const runtime::Context& ctx,
                                      const runtime::Request& request) override;

 private:
  // Deletes the job's pods and Services (every attempt, or only `attempt`
  // when >= 0) in every member, giving each pod `grace_seconds` after
  // SIGTERM (none on a node that is gone or not Ready: no kubelet would
  // finish it); true when nothing of them is left. A member not connected or
  // not answering counts as holding some, unless `may_hold` is given and
  // does not name it.
  // Feeds the member's cached pods to the capacity view again, after its
  // scheduler refused a worker on `node`.
  void RecountMember(const std::string& cluster, const std::string& node);
  StatusOr<bool> DeleteWorkers(const nlohmann::json& job, int32_t attempt,
                               int64_t grace_seconds = kFailedGangGraceSeconds,
                               const std::set<std::string>* may_hold = nullptr);
  // Copies rank 0's progress into `status` when the last read of job `key`
  // is progress_interval old; a failed read leaves the status as it was.
  void RefreshProgress(const std::string& key, const std::string& ns, const RankPlacement& rank0,
                       const std::string& pod, int32_t port,
                       api::v1alpha1::TrainingJobStatus& status);
  // Quarantines the nodes the restart history now condemns
  // (failurePolicy.nodeQuarantine): taints each in its member
  // (fleet/quarantine.h) and lists it in status.quarantinedNodes. Returns
  // the newly listed ones ("cluster/node until <time>"), for Events.
  std::vector<std::string> Quarantine(const std::string& key,
                                      api::v1alpha1::TrainingJobStatus& status,
                                      const std::optional<api::v1alpha1::FailurePolicy>& policy);
  // Deletes the pods and Services of attempts before `attempt` in the
  // clusters that the restart history says the gang lost (ClusterUnavailable
  // records), in each one that is reachable again; a cluster swept clean
  // for an attempt is remembered, so a running job lists it once. True when
  // nothing stale is known to be left.
  bool SweepLostClusters(const std::string& key, const nlohmann::json& job, int32_t attempt,
                         const api::v1alpha1::TrainingJobStatus& status);
  // Whether the gang's workers in `cluster` count as lost: its MemberCluster
  // is gone, or Unreachable (in `fleet` when connected, else in its
  // status). One that exists but is not connected yet (a newly started
  // operator's first moments) is not lost.
  StatusOr<bool> ClusterLost(const std::string& cluster, const placement::Snapshot& fleet);
  // Whether `cluster` is the hub itself (options.hub_member, or a
  // MemberCluster with spec.local), where pods use the job's own Secrets.
  StatusOr<bool> IsHub(const std::string& cluster);
  // spec.storage.s3's credentials Secret in the hub, checked: its content,
  // or null with the problem set (missing, or without a key).
  struct Credentials {
    nlohmann::json secret;
    std::optional<s3access::SecretProblem> problem;
  };
  StatusOr<Credentials> ReadCredentials(const std::string& ns, const api::v1alpha1::S3Storage& s3);
  // Makes kiln's copy of the credentials `secret` in `member` match it:
  // created when missing, updated when the hub's Secret changed, left alone
  // when current. FailedPrecondition when a Secret of the copy's name exists
  // there that is not this job's.
  Status SyncCredentialsCopy(kube::Client& member, const api::v1alpha1::TrainingJob& job,
                             const nlohmann::json& secret);
  // Whether running job `key` (at `ranks`, attempt holder `holder`) should
  // be resized now (resize.h). Growth is looked at once every grow_interval,
  // and only after the gang has run that long (`running_since`); `recheck`
  // is set to when the next look is due while the gang is below its size.
  ResizeDecision PlanResize(const std::string& key, const api::v1alpha1::TrainingJob& job,
                            const std::vector<RankPlacement>& ranks, const std::string& holder,
                            std::optional<std::chrono::system_clock::time_point> running_since,
                            std::optional<std::chrono::milliseconds>& recheck);
  // Whether the ignored failure of `pod` in job `key` is new (worth an Event).
  bool FirstIgnored(const std::string& key, const std::string& pod);
  // Drops what is remembered of job `key`.
  void Forget(const std::string& key);
  // Once per reconciler, before its first placement: holds every placed job
  // whose gang is still being created (phase Scheduled) in the capacity
  // view, from the hub's TrainingJobs (an earlier operator's decisions).
  // Other placements wait for it; an error leaves it for the next one.
  Status RebuildHolds();
  kube::Client& hub_;
  fleet::Members& members_;
  fleet::CapacityView& capacity_;
  runtime::EventRecorder* events_;
  TrainingJobReconcilerOptions options_;

  // What is kept between reconciles of one job, only to save work and
  // repeated Events: losing it (a restart) costs one more read or Event.
  struct JobMemory {
    std::optional<std::chrono::system_clock::time_point> progress_read;
    std::set<std::string> ignored_pods;
    std::set<std::string> swept;  // "cluster@attempt" swept by SweepLostClusters.
    std::optional<std::chrono::system_clock::time_point> grow_checked;
  };
  std::mutex mu_;
  std::map<std::string, JobMemory> memory_;  // By namespace/name; guarded by mu_.
  // Held only while the holds are rebuilt (once, one List of the hub).
  std::mutex rebuild_mu_;
  std::atomic<bool> holds_rebuilt_{false};
};

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_RECONCILER_H_
