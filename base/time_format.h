// Timestamps as Kubernetes and log collectors write them: RFC 3339 in UTC
// with a chosen number of fractional-second digits — 0 for metav1.Time
// (event timestamps), 3 for log lines, 6 for metav1.MicroTime (lease times);
// and read back from any RFC 3339 writer.
#ifndef KILN_BASE_TIME_FORMAT_H_
#define KILN_BASE_TIME_FORMAT_H_

#include <chrono>
#include <string>
#include <string_view>

#include "base/statusor.h"

namespace kiln {

// e.g. "2026-11-22T10:00:00Z", "...T10:00:00.250Z", "...T10:00:00.250000Z".
// `fraction_digits` is 0, 3 or 6 (other values are clamped to them); the
// fraction is truncated, not rounded, as Go's time formatting does.
std::string FormatRfc3339(std::chrono::system_clock::time_point t, int fraction_digits = 0);

// "2026-11-22T10:00:00Z", with an optional fraction (kept to microseconds,
// metav1.MicroTime's precision; finer digits are dropped) and "Z" or a
// "+hh:mm"/"-hh:mm" offset; a lower-case 't' or 'z' is accepted as RFC 3339
// allows. InvalidArgument quoting the text otherwise. Microseconds, not the
// system clock's nanoseconds: those overflow after 2262, and credential
// plugins do hand out far-future expiries.
using Rfc3339Time = std::chrono::sys_time<std::chrono::microseconds>;
StatusOr<Rfc3339Time> ParseRfc3339(std::string_view text);

}  // namespace kiln

#endif  // KILN_BASE_TIME_FORMAT_H_
