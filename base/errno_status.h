// ErrnoStatus: the one mapping from a system error (errno, or the
// std::error_code of <filesystem>) to a Status, so the same failure gets the
// same code, and the same retry decision, wherever kiln meets it. Stateless;
// thread-safe.
//
//   ENOENT, ENOTDIR                         NotFound
//   EACCES, EPERM, EROFS                    PermissionDenied
//   ENOSPC, EDQUOT, EMFILE, ENFILE, ENOMEM  ResourceExhausted (retryable)
//   EIO, EAGAIN, EINTR, ETIMEDOUT, EBUSY,   Unavailable (retryable: the device,
//   ESTALE, and the network's ECONN*,       the file server or the peer may
//   EHOST*, ENET*, EPIPE                    come back)
//   EEXIST, ENOTEMPTY                       AlreadyExists
//   EINVAL, ENAMETOOLONG, EISDIR, ELOOP     InvalidArgument
//   anything else                           Internal
//
// Anything else is Internal, not Unavailable: an errno kiln does not expect
// means kiln's own assumptions broke (a bug or an unclassified failure), so
// in-process retry loops (Status::IsRetryable) do not spin on it, while the
// worker still exits InternalError, which the operator retries a bounded
// number of times (worker/exit_codes.h).
#ifndef KILN_BASE_ERRNO_STATUS_H_
#define KILN_BASE_ERRNO_STATUS_H_

#include <string>
#include <string_view>
#include <system_error>

#include "base/status.h"

namespace kiln {

// The code for errno value `err`, as in the table above.
StatusCode ErrnoCode(int err);

// The Status for errno value `err` while doing `operation` on `path`, with
// the message "<operation> <path>: <the system's reason>", e.g.
// ErrnoStatus(ENOSPC, "cannot write", "/ckpt/step_100.ckpt").
Status ErrnoStatus(int err, std::string_view operation, std::string_view path);

// The same for a <filesystem> error; an error outside the system and generic
// categories is Internal.
Status ErrnoStatus(const std::error_code& ec, std::string_view operation, std::string_view path);

}  // namespace kiln

#endif  // KILN_BASE_ERRNO_STATUS_H_
