// ApiError: the Kubernetes API's metav1.Status for a failed request, attached
// to a kiln Status as its detail, with predicates in the style of client-go's
// apierrors (IsNotFound, IsConflict, ...). Immutable; thread-safe.
#ifndef KILN_KUBE_API_ERROR_H_
#define KILN_KUBE_API_ERROR_H_

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kube/http.h"

namespace kiln::kube {

// One cause of an Invalid (422) error: which field and what is wrong with it.
struct StatusCause {
  std::string type;   // e.g. FieldValueRequired, FieldValueInvalid
  std::string field;  // e.g. spec.containers[0].image
  std::string message;
};

class ApiError final : public StatusDetail {
 public:
  int http_code = 0;
  std::string reason;   // metav1.StatusReason: NotFound, Conflict, Invalid, Expired, ...
  std::string message;  // The server's own message.
  std::string group, kind, name;
  std::vector<StatusCause> causes;
  // From the Retry-After header or details.retryAfterSeconds (429 and some 5xx).
  std::optional<std::chrono::seconds> retry_after;
};

// Builds the Status for a non-2xx response to `verb` (e.g. "GET /api/v1/..."):
// the code follows the reason (NotFound→kNotFound, AlreadyExists→kAlreadyExists,
// Conflict→kAborted, Forbidden→kPermissionDenied, Unauthorized→kUnauthenticated,
// Invalid/BadRequest→kInvalidArgument, TooManyRequests→kResourceExhausted,
// Gone/Expired→kFailedPrecondition, timeouts→kDeadlineExceeded, other 5xx→
// kUnavailable), the message carries the server's words and field causes, and
// the ApiError is attached. Works for non-JSON bodies too.
Status ErrorFromResponse(const HttpResponse& response, const std::string& verb);

// The attached ApiError, or nullptr for errors that are not from the server.
const ApiError* GetApiError(const Status& status);

bool IsNotFound(const Status& status);
bool IsAlreadyExists(const Status& status);
bool IsConflict(const Status& status);
bool IsInvalid(const Status& status);
bool IsForbidden(const Status& status);
bool IsUnauthorized(const Status& status);
bool IsTooManyRequests(const Status& status);
// 410 Gone or reason Expired: the requested resourceVersion is too old; re-list.
bool IsResourceExpired(const Status& status);
bool IsTimeout(const Status& status);

}  // namespace kiln::kube

#endif  // KILN_KUBE_API_ERROR_H_
