// Status: the result of an operation that can fail, with a code and a message.
// Modelled on leveldb::Status and absl::Status. Cheap to copy when ok. Immutable
// values; safe to share between threads.
#ifndef KILN_BASE_STATUS_H_
#define KILN_BASE_STATUS_H_

#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace kiln {

// Error categories. Callers branch on them, so each names what to do next,
// not where the error came from.
enum class StatusCode {
  kOk = 0,
  kCancelled,           // The caller asked to stop.
  kInvalidArgument,     // Bad input; retrying the same call cannot succeed.
  kDeadlineExceeded,    // Timed out; may succeed later.
  kNotFound,            // The named thing does not exist.
  kAlreadyExists,       // Creating something that exists.
  kPermissionDenied,    // Authenticated, but not allowed.
  kResourceExhausted,   // Out of quota or rate limited; retry after a pause.
  kFailedPrecondition,  // The system is not in a state to do this.
  kAborted,             // Lost a race (e.g. an optimistic-concurrency conflict).
  kUnavailable,         // Transient: the peer is down or unreachable.
  kDataLoss,            // Stored data is corrupt or truncated.
  kUnauthenticated,     // Credentials are missing or invalid.
  kInternal,            // A broken invariant; a bug.
};

// Returns the canonical name of `code`, e.g. "NotFound".
std::string_view StatusCodeName(StatusCode code);

// Structured detail a module attaches to its errors (for example the reason,
// HTTP code and field causes of a Kubernetes API error), read back with
// Status::detail<T>(). Immutable once attached; shared between copies.
class StatusDetail {
 public:
  virtual ~StatusDetail() = default;
};

class [[nodiscard]] Status {
 public:
  // Success.
  Status() = default;
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }
  static Status Cancelled(std::string msg) { return {StatusCode::kCancelled, std::move(msg)}; }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status DeadlineExceeded(std::string msg) {
    return {StatusCode::kDeadlineExceeded, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) {
    return {StatusCode::kAlreadyExists, std::move(msg)};
  }
  static Status PermissionDenied(std::string msg) {
    return {StatusCode::kPermissionDenied, std::move(msg)};
  }
  static Status ResourceExhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }
  static Status FailedPrecondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status Aborted(std::string msg) { return {StatusCode::kAborted, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status DataLoss(std::string msg) { return {StatusCode::kDataLoss, std::move(msg)}; }
  static Status Unauthenticated(std::string msg) {
    return {StatusCode::kUnauthenticated, std::move(msg)};
  }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // kiln's one retry policy. True for errors that may go away by themselves:
  // DeadlineExceeded, Unavailable, ResourceExhausted (rate limits, a full
  // disk being cleaned) and Aborted (a lost race). Callers retry these with
  // backoff and treat every other error as terminal. Used by the worker's exit
  // codes (worker/exit_codes.h); the Kubernetes client's read retries and the
  // controller's requeue decision are to call it too.
  bool IsRetryable() const;

  // Returns a copy whose message is "<context>: <message>"; ok stays ok. The
  // detail, if any, is kept.
  Status WithContext(std::string_view context) const;

  // Returns a copy carrying `detail`; ok stays ok (and carries none).
  Status WithDetail(std::shared_ptr<const StatusDetail> detail) const;

  // The attached detail if it is a T, else nullptr.
  template <typename T>
  const T* detail() const {
    return dynamic_cast<const T*>(detail_.get());
  }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Equal when code and message are; details are not compared.
  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::shared_ptr<const StatusDetail> detail_;
};

std::ostream& operator<<(std::ostream& os, const Status& status);

}  // namespace kiln

// Returns from the enclosing function when `expr` (a Status) is not ok.
#define KILN_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::kiln::Status kiln_status_ = (expr);        \
    if (!kiln_status_.ok()) return kiln_status_; \
  } while (false)

#endif  // KILN_BASE_STATUS_H_
