#include "base/time_format.h"

#include <cctype>
#include <cstdio>
#include <ctime>
#include <string>

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

namespace {

// Reads `n` digits at `pos` into `out`; false when they are not all digits.
bool Digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

StatusOr<Rfc3339Time> ParseRfc3339(std::string_view s) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("\"" + std::string(s) + "\" is not an RFC 3339 time (" + why +
                                   "; e.g. 2026-11-22T10:00:00Z)");
  };
  int year, month, day, hour, minute, second;
  if (!Digits(s, 0, 4, year) || s.size() < 19 || s[4] != '-' || !Digits(s, 5, 2, month) ||
      s[7] != '-' || !Digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't') ||
      !Digits(s, 11, 2, hour) || s[13] != ':' || !Digits(s, 14, 2, minute) || s[16] != ':' ||
      !Digits(s, 17, 2, second)) {
    return bad("not YYYY-MM-DDThh:mm:ss");
  }
  using namespace std::chrono;
  const year_month_day date{std::chrono::year(year),
                            std::chrono::month(static_cast<unsigned>(month)),
                            std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return bad("no such date");
  if (hour > 23 || minute > 59 || second > 60) return bad("no such time of day");
  size_t pos = 19;
  microseconds fraction{0};
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    long long value = 0;
    int digits = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (digits < 6) {
        value = value * 10 + (s[pos] - '0');
        ++digits;
      }
      ++pos;
    }
    if (digits == 0) return bad("a '.' without fraction digits");
    for (int d = digits; d < 6; ++d) value *= 10;
    fraction = microseconds(value);
  }
  minutes offset{0};
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!Digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !Digits(s, pos + 4, 2, om) || oh > 23 || om > 59) {
      return bad("a bad zone offset");
    }
    offset = minutes(oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return bad("no zone: end with Z or an offset");
  }
  if (pos != s.size()) return bad("text after the zone");
  // A leap second (:60) lands on the next second, as Go's parser would not
  // accept it at all; Kubernetes never writes one.
  const auto t = sys_days(date) + hours(hour) + minutes(minute) + seconds(second) - offset;
  return time_point_cast<microseconds>(t) + fraction;
}

}  // namespace kiln
