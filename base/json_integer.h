// A JSON number read as a C++ integer without undefined behaviour.
// nlohmann's get<int64_t>() converts whatever number it holds: a double out
// of the integer's range (1e40 in a file) is undefined behaviour, and a
// fraction is cut silently. IntegerAt accepts only an integer within T's
// range and throws nlohmann's type_error otherwise, as get<T>() does for a
// wrong type, so parsers that already catch json::exception refuse it with
// the rest. Header-only; thread-safe.
#ifndef KILN_BASE_JSON_INTEGER_H_
#define KILN_BASE_JSON_INTEGER_H_

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace kiln {

// `j`, which must be an integer (no fraction, no exponent form that made it a
// double) within T's range. `what` names it in the error.
template <typename T>
T IntegerOf(const nlohmann::json& j, const std::string& what) {
  static_assert(std::is_integral_v<T> && std::is_signed_v<T>, "a signed integer type");
  using Limits = std::numeric_limits<T>;
  bool fits = false;
  if (j.is_number_unsigned()) {
    fits = j.get<uint64_t>() <= static_cast<uint64_t>(Limits::max());
  } else if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    fits = v >= static_cast<int64_t>(Limits::min()) && v <= static_cast<int64_t>(Limits::max());
  }
  if (!fits) {
    throw nlohmann::json::type_error::create(
        302,
        what + " must be an integer from " + std::to_string(Limits::min()) + " to " +
            std::to_string(Limits::max()) + ", not " + j.dump(),
        &j);
  }
  return j.get<T>();
}

// The member `key` of object `j` (json::out_of_range when absent) as IntegerOf.
template <typename T>
T IntegerAt(const nlohmann::json& j, const char* key) {
  return IntegerOf<T>(j.at(key), key);
}

}  // namespace kiln

#endif  // KILN_BASE_JSON_INTEGER_H_
