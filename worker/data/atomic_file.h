// AtomicFile: writes a file so that readers see either the old file or the
// whole new one, never a part. Data goes to a hidden temporary file in the
// target's directory; Commit() flushes it to disk (fsync), renames it over the
// target and syncs the directory. A file never committed is removed when the
// object goes away. Not thread-safe; move-only.
#ifndef KILN_WORKER_DATA_ATOMIC_FILE_H_
#define KILN_WORKER_DATA_ATOMIC_FILE_H_

#include <cstddef>
#include <optional>
#include <string>

#include "base/statusor.h"

namespace kiln::data {

class AtomicFile {
 public:
  // Starts writing `path`; its directory must exist. Errors name the path:
  // NotFound (no such directory), PermissionDenied, ResourceExhausted (disk
  // full) or Unavailable (other I/O failures).
  static StatusOr<AtomicFile> Create(const std::string& path);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // Appends `size` bytes. Errors as for Create.
  Status Append(const void* data, std::size_t size);

  // Makes the data durable and visible at the path (mode 0644). The object is
  // finished afterwards, whether or not this succeeded.
  Status Commit();

  const std::string& path() const { return path_; }

  // The name of the file whose temporary file is named `name` (no
  // directory), e.g. "a.bin" for ".a.bin.tmp-Xy12Ab"; none when `name` is
  // not one. A writer killed before Commit leaves such a file behind.
  static std::optional<std::string> TargetOfTemporary(const std::string& name);

 private:
  AtomicFile(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  void Abandon();

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
};

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_ATOMIC_FILE_H_
