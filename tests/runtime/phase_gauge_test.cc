// runtime/phase_gauge.h: objects counted by phase, each in one phase at most.
#include "runtime/phase_gauge.h"

#include <catch2/catch.hpp>
#include <prometheus/registry.h>

namespace kiln::runtime {
namespace {

double Count(prometheus::Family<prometheus::Gauge>& family, const std::string& phase) {
  return family.Has({{"phase", phase}}) ? family.Add({{"phase", phase}}).Value() : 0;
}

TEST_CASE("an object moves between phases and leaves none when gone", "[runtime][metrics]") {
  prometheus::Registry registry;
  auto& family = prometheus::BuildGauge().Name("things").Help("things").Register(registry);
  PhaseGauge gauge(family);
  CHECK(gauge.Set("ns/a", "Pending"));
  CHECK(gauge.Set("ns/b", "Pending"));
  CHECK(Count(family, "Pending") == 2);
  CHECK_FALSE(gauge.Set("ns/a", "Pending"));  // Unchanged: counted once.
  CHECK(Count(family, "Pending") == 2);
  CHECK(gauge.Set("ns/a", "Running"));
  CHECK(Count(family, "Pending") == 1);
  CHECK(Count(family, "Running") == 1);
  CHECK(gauge.Set("ns/a", ""));
  CHECK(Count(family, "Running") == 0);
  CHECK_FALSE(gauge.Set("ns/a", ""));  // Already gone.
  CHECK_FALSE(gauge.Set("ns/c", ""));  // Never seen.
  CHECK(Count(family, "Pending") == 1);
}

}  // namespace
}  // namespace kiln::runtime
