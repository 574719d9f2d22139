// StatusOr<T>: either a value of type T or the non-ok Status saying why there is
// none. Modelled on absl::StatusOr. Not thread-safe for concurrent mutation.
#ifndef KILN_BASE_STATUSOR_H_
#define KILN_BASE_STATUSOR_H_

#include <cstdlib>
#include <iostream>
#include <optional>
#include <utility>

#include "base/status.h"

namespace kiln {

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // A value. Implicit so functions can `return value;`.
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  // An error. `status` must not be ok: an ok status without a value is a bug.
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) Die("StatusOr constructed from an ok Status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // Access the value. Calling these on an error is a bug and aborts.
  T& value() & { return Checked(); }
  const T& value() const& { return const_cast<StatusOr*>(this)->Checked(); }
  T&& value() && { return std::move(Checked()); }
  T& operator*() & { return Checked(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &Checked(); }
  const T* operator->() const { return &value(); }

  // The value, or `fallback` when this holds an error.
  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }

 private:
  [[noreturn]] static void Die(const char* why) {
    std::cerr << "kiln: fatal: " << why << '\n';
    std::abort();
  }
  T& Checked() {
    if (!ok()) {
      std::cerr << "kiln: fatal: value() on an error StatusOr: " << status_ << '\n';
      std::abort();
    }
    return *value_;
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace kiln

#define KILN_STATUS_CONCAT_INNER_(a, b) a##b
#define KILN_STATUS_CONCAT_(a, b) KILN_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (a StatusOr); on error returns its Status, otherwise moves the
// value into `lhs`, which may be a declaration: KILN_ASSIGN_OR_RETURN(auto x, F());
#define KILN_ASSIGN_OR_RETURN(lhs, rexpr) \
  KILN_ASSIGN_OR_RETURN_IMPL_(KILN_STATUS_CONCAT_(kiln_statusor_, __LINE__), lhs, rexpr)
#define KILN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#endif  // KILN_BASE_STATUSOR_H_
