// PhaseGauge: a gauge family counting objects by their status.phase
// (`<family>{phase="Running"} 3`), fed one object at a time: each object's
// last phase is remembered, so a move leaves its old phase's count and
// joins the new one's. The controllers' "objects by phase" metrics use it.
// Thread-safe.
#ifndef KILN_RUNTIME_PHASE_GAUGE_H_
#define KILN_RUNTIME_PHASE_GAUGE_H_

#include <map>
#include <mutex>
#include <string>

#include <prometheus/family.h>
#include <prometheus/gauge.h>

namespace kiln::runtime {

class PhaseGauge {
 public:
  // Counts in `family` (label "phase"), which must outlive this.
  explicit PhaseGauge(prometheus::Family<prometheus::Gauge>& family) : family_(family) {}
  PhaseGauge(const PhaseGauge&) = delete;
  PhaseGauge& operator=(const PhaseGauge&) = delete;

  // Object `key` is now in `phase` ("" when it is gone: it counts nowhere).
  // False when that was already its phase (nothing changed).
  bool Set(const std::string& key, const std::string& phase);

 private:
  prometheus::Family<prometheus::Gauge>& family_;
  std::mutex mu_;
  std::map<std::string, std::string> phases_;  // By key; guarded by mu_.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_PHASE_GAUGE_H_
