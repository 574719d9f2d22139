#include "worker/data/shard.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include <sys/stat.h>

#include "base/errno_status.h"
#include "worker/data/atomic_file.h"

namespace kiln::data {
namespace {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

constexpr bool kLittleEndianHost = std::endian::native == std::endian::little;

uint16_t SwapBytes(uint16_t v) { return static_cast<uint16_t>((v >> 8) | (v << 8)); }

// Closes the descriptor it owns.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// Reads exactly `size` bytes at `offset`, or fails naming the file.
Status ReadFully(int fd, const std::string& path, int64_t offset, char* out, std::size_t size) {
  while (size > 0) {
    ssize_t n = pread(fd, out, size, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "cannot read token shard", path);
    if (n == 0) return Status::DataLoss("token shard " + path + ": the file shrank while reading");
    out += n;
    offset += n;
    size -= static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

// Checks a shard's header against its `size`; returns its token count.
// `header` holds the shard's first min(size, kShardHeaderBytes) bytes (only
// those are read). `name` is "token shard <where>".
StatusOr<int64_t> CheckShardHeader(const unsigned char* header, int64_t size,
                                   const std::string& name) {
  auto word = [&](int i) {
    const unsigned char* b = header + 4 * i;
    return static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
           static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
  };
  if (size >= 4 && word(0) != static_cast<uint32_t>(kShardMagic)) {
    return Status::InvalidArgument(name + ": bad magic " + Hex32(word(0)) + ", want " +
                                   std::to_string(kShardMagic));
  }
  if (size < kShardHeaderBytes) {
    return Status::DataLoss(name + ": truncated header: the file holds " + std::to_string(size) +
                            " bytes, a shard header is " + std::to_string(kShardHeaderBytes));
  }
  const auto version = static_cast<int32_t>(word(1));
  if (version != kShardVersion) {
    return Status::InvalidArgument(name + ": unsupported version " + std::to_string(version) +
                                   ", want " + std::to_string(kShardVersion));
  }
  const auto count = static_cast<int32_t>(word(2));
  if (count < 0) {
    return Status::DataLoss(name + ": header says " + std::to_string(count) + " tokens");
  }
  const int64_t payload = size - kShardHeaderBytes;
  const int64_t want = 2 * int64_t{count};
  if (payload != want) {
    std::string holds = std::to_string(payload / 2) + (payload % 2 ? " and a stray byte" : "");
    if (payload < want) {
      return Status::DataLoss(name + ": truncated: header says " + std::to_string(count) +
                              " tokens, file holds " + holds);
    }
    return Status::DataLoss(name + ": " + std::to_string(payload - want) +
                            " trailing bytes: header says " + std::to_string(count) +
                            " tokens, file holds " + holds);
  }
  return int64_t{count};
}

// Checks the header and size of the open shard; returns its token count.
StatusOr<int64_t> CheckShard(int fd, const std::string& path) {
  const std::string name = "token shard " + path;
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "cannot stat", name);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(name + ": not a regular file");
  const int64_t size = st.st_size;
  std::array<unsigned char, kShardHeaderBytes> header{};
  const auto header_read = static_cast<std::size_t>(std::min<int64_t>(size, kShardHeaderBytes));
  KILN_RETURN_IF_ERROR(ReadFully(fd, path, 0, reinterpret_cast<char*>(header.data()), header_read));
  return CheckShardHeader(header.data(), size, name);
}

// Every token below `vocab_size` (when > 0); DataLoss naming the first that is not.
Status CheckVocabulary(const std::vector<uint16_t>& tokens, int vocab_size,
                       const std::string& where) {
  if (vocab_size <= 0) return Status::Ok();
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size) {
      return Status::DataLoss("token shard " + where + ": token " + std::to_string(tokens[i]) +
                              " at index " + std::to_string(i) + " is outside the vocabulary of " +
                              std::to_string(vocab_size));
    }
  }
  return Status::Ok();
}

StatusOr<int> OpenShard(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "cannot open token shard", path);
  return fd;
}

}  // namespace

Status WriteShard(const std::string& path, std::span<const uint16_t> tokens) {
  if (static_cast<int64_t>(tokens.size()) > kMaxShardTokens) {
    return Status::InvalidArgument("token shard " + path + ": " + std::to_string(tokens.size()) +
                                   " tokens do not fit a shard (at most " +
                                   std::to_string(kMaxShardTokens) + ")");
  }
  std::array<unsigned char, kShardHeaderBytes> header{};
  auto put = [&](int i, uint32_t v) {
    for (int b = 0; b < 4; ++b) header[static_cast<std::size_t>(4 * i + b)] = (v >> (8 * b)) & 0xff;
  };
  put(0, static_cast<uint32_t>(kShardMagic));
  put(1, static_cast<uint32_t>(kShardVersion));
  put(2, static_cast<uint32_t>(tokens.size()));

  KILN_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  KILN_RETURN_IF_ERROR(file.Append(header.data(), header.size()));
  if constexpr (kLittleEndianHost) {
    KILN_RETURN_IF_ERROR(file.Append(tokens.data(), tokens.size_bytes()));
  } else {
    std::vector<uint16_t> chunk;
    constexpr std::size_t kChunk = 1 << 16;
    for (std::size_t i = 0; i < tokens.size(); i += kChunk) {
      auto part = tokens.subspan(i, std::min(kChunk, tokens.size() - i));
      chunk.assign(part.begin(), part.end());
      for (uint16_t& t : chunk) t = SwapBytes(t);
      KILN_RETURN_IF_ERROR(file.Append(chunk.data(), chunk.size() * sizeof(uint16_t)));
    }
  }
  return file.Commit();
}

StatusOr<int64_t> ShardTokenCount(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(int raw_fd, OpenShard(path));
  FileDescriptor fd(raw_fd);
  return CheckShard(fd.get(), path);
}

StatusOr<std::vector<uint16_t>> ReadShard(const std::string& path, int vocab_size) {
  KILN_ASSIGN_OR_RETURN(int raw_fd, OpenShard(path));
  FileDescriptor fd(raw_fd);
  KILN_ASSIGN_OR_RETURN(int64_t count, CheckShard(fd.get(), path));
  std::vector<uint16_t> tokens(static_cast<std::size_t>(count));
  KILN_RETURN_IF_ERROR(ReadFully(fd.get(), path, kShardHeaderBytes,
                                 reinterpret_cast<char*>(tokens.data()),
                                 tokens.size() * sizeof(uint16_t)));
  if constexpr (!kLittleEndianHost) {
    for (uint16_t& t : tokens) t = SwapBytes(t);
  }
  KILN_RETURN_IF_ERROR(CheckVocabulary(tokens, vocab_size, path));
  return tokens;
}

StatusOr<int64_t> ShardTokenCount(storage::ObjectStore& store, const std::string& key) {
  const std::string where = store.Describe(key);
  KILN_ASSIGN_OR_RETURN(storage::ObjectInfo info, store.Stat(key));
  KILN_ASSIGN_OR_RETURN(std::string header, store.GetRange(key, 0, kShardHeaderBytes));
  if (static_cast<int64_t>(header.size()) != std::min(info.size, kShardHeaderBytes)) {
    return Status::DataLoss("token shard " + where + ": the object changed while reading it");
  }
  return CheckShardHeader(reinterpret_cast<const unsigned char*>(header.data()), info.size,
                          "token shard " + where);
}

StatusOr<std::vector<uint16_t>> ReadShard(storage::ObjectStore& store, const std::string& key,
                                          int vocab_size) {
  const std::string where = store.Describe(key);
  KILN_ASSIGN_OR_RETURN(std::string bytes, store.Get(key));
  KILN_ASSIGN_OR_RETURN(
      int64_t count, CheckShardHeader(reinterpret_cast<const unsigned char*>(bytes.data()),
                                      static_cast<int64_t>(bytes.size()), "token shard " + where));
  std::vector<uint16_t> tokens(static_cast<std::size_t>(count));
  std::memcpy(tokens.data(), bytes.data() + kShardHeaderBytes, tokens.size() * sizeof(uint16_t));
  if constexpr (!kLittleEndianHost) {
    for (uint16_t& t : tokens) t = SwapBytes(t);
  }
  KILN_RETURN_IF_ERROR(CheckVocabulary(tokens, vocab_size, where));
  return tokens;
}

}  // namespace kiln::data
