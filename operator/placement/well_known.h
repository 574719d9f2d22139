// Well-known node label and taint keys placement reads. The kwok nodes of the
// local clusters carry all of them (scripts/kiln_localcluster/layout.py); real
// GPU nodes get the nvidia.com ones from NVIDIA's GPU feature discovery and
// the kiln.dev ones from whoever racks them.
#ifndef KILN_OPERATOR_PLACEMENT_WELL_KNOWN_H_
#define KILN_OPERATOR_PLACEMENT_WELL_KNOWN_H_

namespace kiln::placement {

inline constexpr const char* kGpuProductLabel = "nvidia.com/gpu.product";
inline constexpr const char* kZoneLabel = "topology.kubernetes.io/zone";
inline constexpr const char* kRackLabel = "kiln.dev/rack";
inline constexpr const char* kNvlinkDomainLabel = "kiln.dev/nvlink-domain";
inline constexpr const char* kHostnameLabel = "kubernetes.io/hostname";

// The taint kiln puts on a node after repeated hardware faults (issue 14):
// NoSchedule, so placement skips the node like any untolerated taint.
inline constexpr const char* kQuarantineTaint = "kiln.dev/quarantined";

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_WELL_KNOWN_H_
