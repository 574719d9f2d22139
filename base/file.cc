#include "base/file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kiln {

StatusOr<std::string> ReadFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    std::string msg = "cannot read " + path + ": " + std::strerror(err);
    if (err == ENOENT) return Status::NotFound(msg);
    if (err == EACCES) return Status::PermissionDenied(msg);
    return Status::Internal(msg);
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::Internal("error reading " + path);
  return buf.str();
}

}  // namespace kiln
