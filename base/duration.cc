#include "base/duration.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace kiln {
namespace {

struct Unit {
  std::string_view name;
  double ns;
};

// Longest names first so "ms" is not read as "m" followed by "s".
constexpr Unit kUnits[] = {{"ns", 1},  {"us", 1e3}, {"\xC2\xB5s", 1e3}, {"ms", 1e6},
                           {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};

}  // namespace

StatusOr<std::chrono::nanoseconds> ParseDuration(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("duration \"" + std::string(text) + "\": " + why +
                                   " (examples: 30s, 500ms, 1h30m)");
  };
  if (text == "0") return std::chrono::nanoseconds(0);
  if (text.empty()) return bad("empty");
  if (text[0] == '-') return bad("must not be negative");
  if (text[0] == '+') text.remove_prefix(1);
  double total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
    if (i == start) return bad("expected a number at \"" + std::string(text.substr(start)) + "\"");
    std::string number(text.substr(start, i - start));
    if (number == "." || number.find('.') != number.rfind('.')) return bad("malformed number");
    double value = std::stod(number);
    const Unit* unit = nullptr;
    for (const Unit& u : kUnits) {
      if (text.substr(i, u.name.size()) == u.name) {
        unit = &u;
        break;
      }
    }
    if (unit == nullptr) {
      return bad(i == text.size() ? "missing unit after " + number
                                  : "unknown unit \"" + std::string(text.substr(i)) + "\"");
    }
    i += unit->name.size();
    total += value * unit->ns;
  }
  if (total > static_cast<double>(std::numeric_limits<int64_t>::max())) return bad("too large");
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(total)));
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string sign = ns < 0 ? "-" : "";
  uint64_t u = ns < 0 ? static_cast<uint64_t>(-(ns + 1)) + 1 : static_cast<uint64_t>(ns);
  auto fraction = [](uint64_t v, uint64_t per, const char* unit) {
    std::string s = std::to_string(v / per);
    uint64_t rest = v % per;
    if (rest != 0) {
      std::string frac = std::to_string(per + rest).substr(1);
      while (!frac.empty() && frac.back() == '0') frac.pop_back();
      s += "." + frac;
    }
    return s + unit;
  };
  if (u < 1000) return sign + std::to_string(u) + "ns";
  if (u < 1000000) return sign + fraction(u, 1000, "us");
  if (u < 1000000000) return sign + fraction(u, 1000000, "ms");
  std::string out;
  uint64_t hours = u / 3600000000000ULL;
  u %= 3600000000000ULL;
  uint64_t minutes = u / 60000000000ULL;
  u %= 60000000000ULL;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
  out += fraction(u, 1000000000, "s");
  return sign + out;
}

}  // namespace kiln
