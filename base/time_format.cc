#include "base/time_format.h"

#include <cstdio>
#include <ctime>

namespace kiln {

std::string FormatRfc3339(std::chrono::system_clock::time_point t, int fraction_digits) {
  using std::chrono::duration_cast;
  const auto secs = std::chrono::floor<std::chrono::seconds>(t);
  const long long micros = duration_cast<std::chrono::microseconds>(t - secs).count();
  const std::time_t tt = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[80];
  int n = std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  std::string out(buf, static_cast<size_t>(n));
  if (fraction_digits >= 6) {
    std::snprintf(buf, sizeof(buf), ".%06lld", micros);
    out += buf;
  } else if (fraction_digits > 0) {
    std::snprintf(buf, sizeof(buf), ".%03lld", micros / 1000);
    out += buf;
  }
  return out + "Z";
}

}  // namespace kiln
