// Token shards: the on-disk form of tokenized training data, compatible with
// llm.c's .bin files. A shard is a header of 256 little-endian int32 — [0] the
// magic 20240520, [1] the version 1, [2] the number of tokens N, the rest zero —
// followed by exactly N little-endian uint16 tokens (1024 + 2N bytes in all).
// docs/data.md describes the format byte by byte. Stateless; thread-safe.
#ifndef KILN_WORKER_DATA_SHARD_H_
#define KILN_WORKER_DATA_SHARD_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/statusor.h"
#include "worker/storage/object_store.h"

namespace kiln::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;
// The header counts tokens in an int32.
inline constexpr int64_t kMaxShardTokens = INT32_MAX;

// Writes `tokens` as a shard at `path` atomically (see atomic_file.h): readers
// never see a partial shard, and a failed write leaves no temporary file.
// InvalidArgument for more than kMaxShardTokens tokens; otherwise the errors of
// AtomicFile, naming the path.
Status WriteShard(const std::string& path, std::span<const uint16_t> tokens);

// The number of tokens in the shard at `path`, reading only its header and
// size. The same validation and errors as ReadShard, less the token check.
StatusOr<int64_t> ShardTokenCount(const std::string& path);

// Reads the whole shard at `path`. When `vocab_size` > 0, every token must be
// below it. Errors name the file and what is wrong: NotFound (missing),
// PermissionDenied (unreadable), InvalidArgument (not a shard: bad magic or
// unsupported version), DataLoss (truncated, trailing bytes, a token outside
// the vocabulary), Unavailable (an I/O error).
StatusOr<std::vector<uint16_t>> ReadShard(const std::string& path, int vocab_size = 0);

// ShardTokenCount and ReadShard for a shard in an object store (S3): the
// count from a ranged read of the header and the object's size; the tokens
// from one read of the object, no local copy. The same checks and errors,
// naming the object, plus the store's own errors (NotFound, PermissionDenied,
// Unavailable).
StatusOr<int64_t> ShardTokenCount(storage::ObjectStore& store, const std::string& key);
StatusOr<std::vector<uint16_t>> ReadShard(storage::ObjectStore& store, const std::string& key,
                                          int vocab_size = 0);

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_SHARD_H_
