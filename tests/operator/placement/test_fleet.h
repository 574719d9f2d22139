// Small builders for placement tests: GPU nodes labelled like the local
// clusters' kwok nodes (scripts/kiln_localcluster/layout.py) and gangs.
#ifndef KILN_TESTS_OPERATOR_PLACEMENT_TEST_FLEET_H_
#define KILN_TESTS_OPERATOR_PLACEMENT_TEST_FLEET_H_

#include <string>

#include <catch2/catch.hpp>

#include "operator/placement/gang.h"
#include "operator/placement/snapshot.h"
#include "operator/placement/well_known.h"

namespace kiln::placement::testing {

inline constexpr const char* kH100 = "NVIDIA-H100-80GB-HBM3";
inline constexpr int64_t kGi = int64_t{1} << 30;

inline NodeInfo GpuNode(const std::string& name, const std::string& nvl, const std::string& rack,
                        const std::string& zone, int64_t gpus = 8,
                        const std::string& product = kH100) {
  NodeInfo n;
  n.name = name;
  n.labels = {{kNvlinkDomainLabel, nvl},
              {kRackLabel, rack},
              {kZoneLabel, zone},
              {kGpuProductLabel, product},
              {kHostnameLabel, name}};
  n.allocatable = {gpus, 96000, 1024 * kGi};
  return n;
}

inline ClusterInfo Cluster(const std::string& name, Labels labels = {}) {
  ClusterInfo c;
  c.name = name;
  c.labels = std::move(labels);
  return c;
}

inline Gang GpuGang(const std::string& name, int32_t replicas, int32_t gpus = 8) {
  Gang g;
  g.name = name;
  g.replicas = replicas;
  g.gpus_per_worker = gpus;
  g.cpu_millis = 4000;
  g.memory_bytes = 16 * kGi;
  return g;
}

// Adds `nodes` nodes of 8 GPUs to `cluster`, `per_nvl` per NVLink domain and
// `per_rack` per rack, all in one zone: "<cluster>-gpu-<i>", "<cluster>-nvl-<i/per_nvl>".
inline void AddNodes(Snapshot& s, const std::string& cluster, int nodes, int per_nvl,
                     int per_rack) {
  for (int i = 0; i < nodes; ++i) {
    REQUIRE(s.UpsertNode(cluster, GpuNode(cluster + "-gpu-" + std::to_string(i),
                                          cluster + "-nvl-" + std::to_string(i / per_nvl),
                                          cluster + "-rack-" + std::to_string(i / per_rack),
                                          cluster + "-zone-a"))
                .ok());
  }
}

}  // namespace kiln::placement::testing

#endif  // KILN_TESTS_OPERATOR_PLACEMENT_TEST_FLEET_H_
