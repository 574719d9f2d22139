// WorkerPods: the Kubernetes objects of one attempt of a TrainingJob's gang
// on its member clusters — one worker pod per rank and a headless Service for
// the rendezvous — built from the job and its placement. Pure: the controller
// creates what this returns; tests read it as JSON.
//
// Each pod:
//  - is pinned to the node placement chose by required node affinity (never
//    nodeName: the member's kube-scheduler still binds it, so its quotas,
//    taints and the device plugin's accounting hold) and carries the
//    scheduling gate kiln.dev/gang, lifted only when the whole gang exists;
//  - runs `kiln-worker prepare` as an init container into an emptyDir (the
//    preparation is deterministic, so every rank holds the same shards) and
//    then `kiln-worker train` with RANK, WORLD_SIZE, MASTER_ADDR and
//    MASTER_PORT (rank 0's stable DNS name under the Service), resuming from
//    the newest intact checkpoint in the job's checkpoint folder — or, in
//    the attempt after a LossDiverged restart (until it is suspended), from
//    the newest before the record's rewindBeforeStep, skipping the data
//    through its failedAtStep (--rewind-before-step, --skip-data-through-step);
//  - mounts the operator's shared volume (a ReadWriteMany claim, or a
//    hostPath in the local clusters), under which file:// checkpoint URIs
//    must lie, so every rank and every restart sees the same checkpoints;
//  - with spec.storage.s3, mounts the credentials Secret read-only and gets
//    the store's endpoint, region and addressing style (s3_access.h);
//  - restarts never by itself (restartPolicy Never): the controller restarts
//    the whole gang, so no half-dead collective waits out a timeout;
//  - runs as the images' non-root user under the restricted Pod Security
//    profile (no privilege escalation, all capabilities dropped, read-only
//    root filesystem, RuntimeDefault seccomp).
// Owner references do not cross clusters: pods carry labels naming the job
// and its UID, and get an owner reference only in the job's own cluster.
#ifndef KILN_OPERATOR_CONTROLLERS_TRAININGJOB_WORKER_PODS_H_
#define KILN_OPERATOR_CONTROLLERS_TRAININGJOB_WORKER_PODS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "operator/api/labels.h"
#include "operator/api/v1alpha1/trainingjob.h"

namespace kiln::trainingjob {

// Labels on everything kiln makes for a job, beside api::kManagedByLabel
// (defined in api/labels.h, which the fleet's capacity view reads too).
using api::kAttemptLabel;
using api::kJobNameLabel;
using api::kJobUidLabel;
using api::kRankLabel;
// The scheduling gate held until the whole gang exists.
inline constexpr const char* kGangGate = "kiln.dev/gang";
// The worker container's name (the failure classifier reads its status).
inline constexpr const char* kWorkerContainer = "worker";

// The volume every worker mounts for checkpoints (and file:// data on it).
struct SharedVolume {
  // Exactly one of these: a PersistentVolumeClaim (ReadWriteMany) in the
  // job's namespace, or a folder on every node (local clusters).
  std::string claim_name;
  std::string host_path;
  // Where it is mounted in the worker; file:// checkpoint URIs lie under it.
  std::string mount_path = "/checkpoints";
};

struct WorkerPodOptions {
  SharedVolume volume;
  // The job lives in this member cluster too: its objects there get an
  // owner reference (garbage-collected with the job).
  bool same_cluster_as_job = false;
  // Restart attempts so far (status.restarts): part of the pod names, so a
  // new gang never waits for the old one's names to be free.
  int32_t attempt = 0;
  int32_t master_port = 29500;
  int32_t metrics_port = 9400;
  // The Secret with spec.storage.s3's credentials in each member cluster, by
  // cluster name: kiln's copy (CredentialsCopyName) where the member is not
  // the hub. A cluster not listed uses the spec's own Secret.
  std::map<std::string, std::string> credentials_secrets;
};

// Where one rank runs.
struct RankPlacement {
  std::string cluster;
  std::string node;
};

// The pods and the Service of one attempt: `pods[rank]`, and one Service per
// member cluster the gang uses (`services[i]` goes to `service_clusters[i]`).
struct GangObjects {
  std::vector<nlohmann::json> pods;
  std::vector<std::string> pod_clusters;
  std::vector<nlohmann::json> services;
  std::vector<std::string> service_clusters;
};

// InvalidArgument naming the field for what the schema cannot check: a
// global batch that the micro batch and world size do not divide, a file://
// checkpoint URI without a shared volume or outside it, an s3:// URI without
// spec.storage.s3. The placement's size is the world size, whatever
// spec.workers.replicas says now (a scaled gang keeps its size until it is
// resized: resize.h).
// s3:// data is a prepared dataset (its manifest.json, or the prefix holding
// it) that train reads directly, with no prepare init container.
StatusOr<GangObjects> BuildGang(const api::v1alpha1::TrainingJob& job,
                                const std::vector<RankPlacement>& placement,
                                const WorkerPodOptions& options);

// A DNS label (at most 63 characters, [a-z0-9-], starting with a letter and
// ending alphanumeric) from `base` and `suffix`: `base` is lower-cased, its
// other characters become '-', and when too long it is cut and an 8-digit
// hash of the whole keeps it unique.
std::string DnsLabel(const std::string& base, const std::string& suffix);

// The pod name of `rank` in `attempt` of job `job`.
std::string WorkerPodName(const std::string& job, int32_t attempt, int32_t rank);

// The name of kiln's copy of job `job`'s S3 credentials Secret in a member
// cluster: never the user's own name, so a member that turns out to be the
// hub (a kubeconfig pointing back at it) keeps the original untouched.
std::string CredentialsCopyName(const std::string& job);

// That copy of `secret` (spec.storage.s3.credentialsSecretRef's Secret, as
// read from the hub), labelled like the job's pods but with no attempt:
// deleted with them when the job goes, kept across restarts.
nlohmann::json BuildCredentialsCopy(const api::v1alpha1::TrainingJob& job,
                                    const nlohmann::json& secret);

}  // namespace kiln::trainingjob

#endif  // KILN_OPERATOR_CONTROLLERS_TRAININGJOB_WORKER_PODS_H_
