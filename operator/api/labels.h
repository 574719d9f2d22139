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

}  // namespace kiln::api

#endif  // KILN_OPERATOR_API_LABELS_H_
