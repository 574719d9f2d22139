#include "base/errno_status.h"

#include <cerrno>
#include <cstring>

namespace kiln {

StatusCode ErrnoCode(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return StatusCode::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return StatusCode::kPermissionDenied;
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return StatusCode::kResourceExhausted;
    case EIO:
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case ETIMEDOUT:
    case EBUSY:
    case ESTALE:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENETRESET:
    case EPIPE:
      return StatusCode::kUnavailable;
    case EEXIST:
    case ENOTEMPTY:
      return StatusCode::kAlreadyExists;
    case EINVAL:
    case ENAMETOOLONG:
    case EISDIR:
    case ELOOP:
      return StatusCode::kInvalidArgument;
    default:
      return StatusCode::kInternal;
  }
}

Status ErrnoStatus(int err, std::string_view operation, std::string_view path) {
  std::string msg(operation);
  if (!path.empty()) {
    msg += ' ';
    msg += path;
  }
  msg += ": ";
  msg += err == 0 ? "no error recorded (errno 0)" : std::strerror(err);
  // errno 0 means the caller lost the error: that is kiln's bug.
  return Status(err == 0 ? StatusCode::kInternal : ErrnoCode(err), std::move(msg));
}

Status ErrnoStatus(const std::error_code& ec, std::string_view operation, std::string_view path) {
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) {
    return ErrnoStatus(ec.value(), operation, path);
  }
  std::string msg(operation);
  if (!path.empty()) {
    msg += ' ';
    msg += path;
  }
  return Status::Internal(msg + ": " + ec.message());
}

}  // namespace kiln
