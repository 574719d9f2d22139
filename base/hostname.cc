#include "base/hostname.h"

#include <unistd.h>

namespace kiln {

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

}  // namespace kiln
