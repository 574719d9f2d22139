#include "worker/data/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include <sys/stat.h>

#include "base/errno_status.h"

namespace kiln::data {

namespace {

constexpr char kTemporaryInfix[] = ".tmp-";
constexpr size_t kTemporarySuffixBytes = 6;  // mkstemp's XXXXXX.

}  // namespace

StatusOr<AtomicFile> AtomicFile::Create(const std::string& path) {
  std::filesystem::path target(path);
  std::filesystem::path dir = target.parent_path();
  std::string temp = (dir / ("." + target.filename().string() + kTemporaryInfix +
                             std::string(kTemporarySuffixBytes, 'X')))
                         .string();
  int fd = mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot create a temporary file for", path);
  return AtomicFile(path, std::move(temp), fd);
}

std::optional<std::string> AtomicFile::TargetOfTemporary(const std::string& name) {
  const size_t infix = sizeof(kTemporaryInfix) - 1;
  if (name.size() < 2 + infix + kTemporarySuffixBytes || name[0] != '.' ||
      name.compare(name.size() - kTemporarySuffixBytes - infix, infix, kTemporaryInfix) != 0) {
    return std::nullopt;
  }
  return name.substr(1, name.size() - 1 - infix - kTemporarySuffixBytes);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

AtomicFile::~AtomicFile() { Abandon(); }

void AtomicFile::Abandon() {
  if (fd_ < 0) return;
  close(fd_);
  unlink(temp_path_.c_str());
  fd_ = -1;
}

Status AtomicFile::Append(const void* data, std::size_t size) {
  if (fd_ < 0) return Status::FailedPrecondition(path_ + ": write after Commit");
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status error = ErrnoStatus(errno, "cannot write", path_);
      Abandon();
      return error;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

Status AtomicFile::Commit() {
  if (fd_ < 0) return Status::FailedPrecondition(path_ + ": Commit after Commit");
  // mkstemp creates 0600; the finished file is as readable as any other output.
  if (fchmod(fd_, 0644) != 0 || fsync(fd_) != 0) {
    Status error = ErrnoStatus(errno, "cannot flush", path_);
    Abandon();
    return error;
  }
  int fd = std::exchange(fd_, -1);
  if (close(fd) != 0) {
    Status error = ErrnoStatus(errno, "cannot close", path_);
    unlink(temp_path_.c_str());
    return error;
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    Status error = ErrnoStatus(errno, "cannot rename the temporary file to", path_);
    unlink(temp_path_.c_str());
    return error;
  }
  // The rename is durable only once the directory entry is.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dir_fd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoStatus(errno, "cannot open the directory of", path_);
  int rc = fsync(dir_fd);
  int err = errno;
  close(dir_fd);
  if (rc != 0) return ErrnoStatus(err, "cannot sync the directory of", path_);
  return Status::Ok();
}

}  // namespace kiln::data
