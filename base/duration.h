// Durations in Go's time.ParseDuration syntax ("300ms", "1.5h", "2h45m"), the
// form Kubernetes users write in flags and manifests.
#ifndef KILN_BASE_DURATION_H_
#define KILN_BASE_DURATION_H_

#include <chrono>
#include <string>
#include <string_view>

#include "base/statusor.h"

namespace kiln {

// Units: ns, us (or µs), ms, s, m, h. A bare "0" is allowed; a negative sign
// is not (nothing kiln configures runs backwards). InvalidArgument naming the
// problem otherwise.
StatusOr<std::chrono::nanoseconds> ParseDuration(std::string_view text);

// The shortest Go-style spelling, e.g. "1m30s", "250ms", "0s".
std::string FormatDuration(std::chrono::nanoseconds d);

}  // namespace kiln

#endif  // KILN_BASE_DURATION_H_
