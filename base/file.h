// Whole-file reads for configuration and credentials. Stateless; thread-safe.
#ifndef KILN_BASE_FILE_H_
#define KILN_BASE_FILE_H_

#include <string>

#include "base/statusor.h"

namespace kiln {

// Reads the file at `path`. Errors as base/errno_status.h maps the system's
// (NotFound when it does not exist, PermissionDenied when it cannot be opened
// for reading, Unavailable for an I/O error); the message names the path and
// the system's reason.
StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace kiln

#endif  // KILN_BASE_FILE_H_
