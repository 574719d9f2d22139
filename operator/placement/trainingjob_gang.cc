#include "operator/placement/trainingjob_gang.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "operator/placement/api_label_selector.h"

namespace kiln::placement {

namespace {

struct Suffix {
  const char* text;
  double factor;
};

// Binary suffixes first, so "Mi" is not read as "M" followed by junk.
constexpr Suffix kSuffixes[] = {
    {"Ki", 1024.0},
    {"Mi", 1048576.0},
    {"Gi", 1073741824.0},
    {"Ti", 1099511627776.0},
    {"Pi", 1125899906842624.0},
    {"Ei", 1152921504606846976.0},
    {"m", 1e-3},
    {"k", 1e3},
    {"M", 1e6},
    {"G", 1e9},
    {"T", 1e12},
    {"P", 1e15},
    {"E", 1e18},
    {"", 1.0},
};

}  // namespace

StatusOr<int64_t> ParseMilliQuantity(const nlohmann::json& quantity) {
  double value = 0;
  if (quantity.is_number()) {
    value = quantity.get<double>();
  } else if (quantity.is_string()) {
    const std::string text = quantity.get<std::string>();
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc() || ptr == text.data()) {
      return Status::InvalidArgument("\"" + text + "\" is not a quantity");
    }
    const std::string suffix(ptr, end);
    bool known = false;
    for (const auto& s : kSuffixes) {
      if (suffix == s.text) {
        value *= s.factor;
        known = true;
        break;
      }
    }
    if (!known) return Status::InvalidArgument("\"" + text + "\" has an unknown suffix");
  } else {
    return Status::InvalidArgument("a quantity must be a string or a number");
  }
  const double milli = std::ceil(value * 1000.0);
  if (!std::isfinite(milli) || milli < 0 || milli > 9.2e18) {
    return Status::InvalidArgument("quantity out of range");
  }
  return static_cast<int64_t>(milli);
}

StatusOr<Gang> FromTrainingJob(const api::v1alpha1::TrainingJob& job, int32_t priority) {
  const auto& spec = job.spec;
  Gang g;
  g.name = job.metadata.value("namespace", "") + "/" + job.metadata.value("name", "");
  g.replicas = spec.workers.replicas;
  if (spec.elastic) {
    // Sized from workers.replicas (what the job asks for now; `kubectl
    // scale` sets it) down to minReplicas; maxReplicas bounds replicas.
    const auto& t = spec.training;
    g.elastic = ElasticPolicy{
        .min_replicas = spec.elastic->min_replicas,
        .max_replicas = std::min(spec.workers.replicas, spec.elastic->max_replicas),
        .batch_units = t.micro_batch_size > 0 && t.global_batch_size % t.micro_batch_size == 0
                           ? t.global_batch_size / t.micro_batch_size
                           : 0};
  }
  g.gpus_per_worker = spec.workers.gpus_per_worker.value_or(8);
  if (spec.workers.resources && spec.workers.resources->requests) {
    const auto& requests = *spec.workers.resources->requests;
    if (auto cpu = requests.find("cpu"); cpu != requests.end()) {
      auto milli = ParseMilliQuantity(cpu->second);
      if (!milli.ok()) return milli.status().WithContext("spec.workers.resources.requests.cpu");
      g.cpu_millis = *milli;
    }
    if (auto memory = requests.find("memory"); memory != requests.end()) {
      auto milli = ParseMilliQuantity(memory->second);
      if (!milli.ok()) {
        return milli.status().WithContext("spec.workers.resources.requests.memory");
      }
      g.memory_bytes = (*milli + 999) / 1000;
    }
  }
  if (spec.workers.node_selector) {
    for (const auto& [k, v] : *spec.workers.node_selector) g.node_selector[k] = v;
  }
  if (spec.workers.tolerations) {
    for (const auto& t : *spec.workers.tolerations) {
      g.tolerations.push_back(Toleration{t.key.value_or(""), t.operator_.value_or("Equal"),
                                         t.value.value_or(""), t.effect.value_or("")});
    }
  }
  if (spec.placement) {
    const auto& p = *spec.placement;
    g.strategy =
        p.strategy.value_or("BinPack") == "Spread" ? Strategy::kSpread : Strategy::kBinPack;
    g.topology_key = p.topology_key.value_or(kNvlinkDomainLabel);
    g.allow_multi_cluster = p.allow_multi_cluster.value_or(false);
    if (p.cluster_selector) g.cluster_selector = LabelSelectorFromApi(*p.cluster_selector);
  }
  if (job.status && job.status->quarantined_nodes) {
    g.avoid_nodes = *job.status->quarantined_nodes;
  }
  g.priority = priority;
  return g;
}

}  // namespace kiln::placement
