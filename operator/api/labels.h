// The labels kiln puts on what it makes (worker pods, their Services, serving
// Services): the fleet's pod informers and kiln-router select on them and the
// controllers set them. One definition for every reader and writer.
#ifndef KILN_OPERATOR_API_LABELS_H_
#define KILN_OPERATOR_API_LABELS_H_

namespace kiln::api {

inline constexpr const char* kManagedByLabel = "app.kubernetes.io/managed-by";
inline constexpr const char* kManagedByValue = "kiln";

// On each ModelDeployment version's Service (and so, copied by the
// EndpointSlice controller, on its EndpointSlices): the deployment's name and
// the model version the Service's pods serve. kiln-router finds a version's
// endpoints by them.
inline constexpr const char* kModelDeploymentLabel = "kiln.dev/model-deployment";
inline constexpr const char* kModelVersionLabel = "kiln.dev/model-version";
// On what kiln makes for a ModelDeployment in a member cluster (owner
// references do not cross clusters): the ModelDeployment's UID, so that only
// this incarnation's objects are counted as its own and cleaned up.
inline constexpr const char* kModelDeploymentUidLabel = "kiln.dev/model-deployment-uid";

// On each TrainingJob worker pod and Service in a member (owner references do
// not cross clusters): the job's name (DNS-label safe; a long one is cut and
// hashed) and UID, the attempt (status.restarts when it was created) and, on
// pods, the rank. The capacity view keys a worker pod's GPUs by UID, attempt
// and rank, so the pod replaces the hold its placement made.
inline constexpr const char* kJobNameLabel = "kiln.dev/trainingjob";
inline constexpr const char* kJobUidLabel = "kiln.dev/trainingjob-uid";
inline constexpr const char* kRankLabel = "kiln.dev/rank";
inline constexpr const char* kAttemptLabel = "kiln.dev/attempt";

}  // namespace kiln::api

#endif  // KILN_OPERATOR_API_LABELS_H_
