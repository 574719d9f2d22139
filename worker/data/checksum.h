// SHA-256 checksums of data files and inputs, as lowercase hex, recorded in
// the data manifest so a reader can tell that a shard is the one prepare
// wrote. Stateless; thread-safe.
#ifndef KILN_WORKER_DATA_CHECKSUM_H_
#define KILN_WORKER_DATA_CHECKSUM_H_

#include <string>
#include <string_view>

#include "base/statusor.h"

namespace kiln::data {

// The SHA-256 of `bytes`: 64 lowercase hex digits.
std::string Sha256Hex(std::string_view bytes);

// The SHA-256 of the file at `path`, read in pieces. NotFound,
// PermissionDenied or Unavailable naming the path when it cannot be read.
StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_CHECKSUM_H_
