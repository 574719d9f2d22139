// Builders for fleet tests: Node and Pod objects shaped like the local
// clusters' kwok nodes (scripts/kiln_localcluster/layout.py) and their pods.
#ifndef KILN_TESTS_OPERATOR_FLEET_TEST_OBJECTS_H_
#define KILN_TESTS_OPERATOR_FLEET_TEST_OBJECTS_H_

#include <string>

#include <nlohmann/json.hpp>

namespace kiln::fleet::testing {

inline constexpr const char* kH100 = "NVIDIA-H100-80GB-HBM3";

inline nlohmann::json GpuNode(const std::string& name, const std::string& zone,
                              const std::string& rack, const std::string& nvl, int gpus = 8,
                              bool ready = true) {
  nlohmann::json resources = {
      {"cpu", "96"}, {"memory", "1024Gi"}, {"nvidia.com/gpu", std::to_string(gpus)}};
  return {{"apiVersion", "v1"},
          {"kind", "Node"},
          {"metadata",
           {{"name", name},
            {"labels",
             {{"nvidia.com/gpu.product", kH100},
              {"topology.kubernetes.io/zone", zone},
              {"kiln.dev/rack", rack},
              {"kiln.dev/nvlink-domain", nvl}}}}},
          {"spec", nlohmann::json::object()},
          {"status",
           {{"capacity", resources},
            {"allocatable", resources},
            {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
}

inline nlohmann::json GpuPod(const std::string& ns, const std::string& name,
                             const std::string& node, int gpus) {
  nlohmann::json spec = {{"containers",
                          {{{"name", "worker"},
                            {"resources",
                             {{"limits", {{"nvidia.com/gpu", std::to_string(gpus)}}},
                              {"requests", {{"cpu", "500m"}}}}}}}}};
  if (!node.empty()) spec["nodeName"] = node;
  return {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata",
       {{"name", name}, {"namespace", ns}, {"labels", {{"app.kubernetes.io/managed-by", "kiln"}}}}},
      {"spec", spec},
      {"status", {{"phase", node.empty() ? "Pending" : "Running"}}}};
}

// A TrainingJob worker pod: GpuPod with the job UID, attempt and rank labels
// the worker pods carry (trainingjob/worker_pods.h).
inline nlohmann::json WorkerPod(const std::string& ns, const std::string& job_uid, int attempt,
                                int rank, const std::string& node, int gpus) {
  nlohmann::json pod =
      GpuPod(ns, job_uid + "-" + std::to_string(attempt) + "-" + std::to_string(rank), node, gpus);
  pod["metadata"]["labels"]["kiln.dev/trainingjob-uid"] = job_uid;
  pod["metadata"]["labels"]["kiln.dev/attempt"] = std::to_string(attempt);
  pod["metadata"]["labels"]["kiln.dev/rank"] = std::to_string(rank);
  return pod;
}

}  // namespace kiln::fleet::testing

#endif  // KILN_TESTS_OPERATOR_FLEET_TEST_OBJECTS_H_
