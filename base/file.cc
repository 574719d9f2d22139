#include "base/file.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include "base/errno_status.h"

namespace kiln {

StatusOr<std::string> ReadFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, "cannot read", path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return ErrnoStatus(errno != 0 ? errno : EIO, "error reading", path);
  return buf.str();
}

}  // namespace kiln
