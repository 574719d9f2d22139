// The API's LabelSelector (api/v1alpha1/common.yaml) as placement's plain
// LabelSelector, for matching MemberClusters' labels: a TrainingJob's
// spec.placement.clusterSelector, a ModelDeployment's spec.clusterSelector.
// Pure; thread-safe.
#ifndef KILN_OPERATOR_PLACEMENT_API_LABEL_SELECTOR_H_
#define KILN_OPERATOR_PLACEMENT_API_LABEL_SELECTOR_H_

#include "operator/api/v1alpha1/common.h"
#include "operator/placement/label_selector.h"

namespace kiln::placement {

LabelSelector LabelSelectorFromApi(const api::v1alpha1::LabelSelector& selector);

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_API_LABEL_SELECTOR_H_
