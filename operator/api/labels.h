// The label that marks what kiln makes in member clusters (worker pods, their
// Services): the fleet's pod informers select on it and the controllers set
// it. One definition for every reader and writer.
#ifndef KILN_OPERATOR_API_LABELS_H_
#define KILN_OPERATOR_API_LABELS_H_

namespace kiln::api {

inline constexpr const char* kManagedByLabel = "app.kubernetes.io/managed-by";
inline constexpr const char* kManagedByValue = "kiln";

}  // namespace kiln::api

#endif  // KILN_OPERATOR_API_LABELS_H_
