// DataLoader: feeds training steps from token shards (shard.h), the same way
// on every rank of a data-parallel job. The shards form one token stream, read
// in order. A step (one optimizer step) consumes A*W*B*T tokens of it (A
// micro-batches of gradient accumulation, W ranks, B sequences of T tokens
// each), read in A calls of Next(): micro-batch m of rank r is sequences
// [(m*W + r)*B, (m*W + r + 1)*B) of the step. So the sequences of a step, and
// where steps move to the next shard, depend only on A*W*B (the global batch),
// not on how it is split: a run resumed at another world size with the
// accumulation that keeps A*W trains on exactly the same data (an elastic
// TrainingJob's resize). Targets are the inputs shifted by one token, so a
// step reads A*W*B*T + 1 tokens.
//
// When the current shard has too few tokens left for a whole step, the loader
// moves to the start of the next shard (the rest is skipped this epoch); after
// the last shard it wraps to the first and the epoch increments. The shard
// order is the given order, or with a shuffle seed a permutation per epoch
// computed from the seed and the epoch alone (the same on every machine and
// standard library). Position says where the next batch comes from; Seek to a
// saved Position resumes exactly.
//
// Memory: one shard's tokens (2 bytes each) at a time. Not thread-safe; one
// loader per rank. Move-only.
#ifndef KILN_WORKER_DATA_LOADER_H_
#define KILN_WORKER_DATA_LOADER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/storage/object_store.h"

namespace kiln::data {

struct LoaderOptions {
  int batch_size = 1;    // B: sequences per rank per step.
  int seq_len = 1;       // T: tokens per sequence.
  int rank = 0;          // r, in [0, world_size).
  int world_size = 1;    // W: ranks reading the same shards.
  int accumulation = 1;  // A: micro-batches (calls of Next) per step.
  // Shuffle the shard order of every epoch with this seed; unset: given order.
  std::optional<uint64_t> shuffle_seed;
  // When > 0, a token >= vocab_size in a shard is a DataLoss error.
  int vocab_size = 0;
};

// Where in the token stream the next batch starts. Rank-independent: every
// rank of a step holds the same Position.
struct Position {
  int64_t epoch = 0;
  int64_t shard = 0;   // Index into the epoch's shard order (not the given list).
  int64_t offset = 0;  // Token offset in that shard where the step begins.

  // {"epoch": E, "shard": S, "offset": O}.
  nlohmann::json ToJson() const;
  // The inverse of ToJson; InvalidArgument for missing, mistyped or negative fields.
  static StatusOr<Position> FromJson(const nlohmann::json& json);

  friend bool operator==(const Position&, const Position&) = default;
};

// One rank's share of a step.
struct Batch {
  std::vector<uint16_t> inputs;   // B*T tokens: sequence b is [b*T, (b+1)*T).
  std::vector<uint16_t> targets;  // B*T tokens: targets[i] follows inputs[i] in the stream.
  Position position;              // Where the step was read.
};

class DataLoader {
 public:
  // Opens a loader over `shards`, reading only their headers. InvalidArgument
  // for bad options (B or T < 1, rank outside [0, world), no shards);
  // FailedPrecondition naming a shard too small for one step (W*B*T + 1
  // tokens); the errors of ShardTokenCount for a missing or malformed shard.
  // With `store`, the shards are keys in it (an S3 bucket), read one at a
  // time as the loader reaches them; without, file paths.
  static StatusOr<DataLoader> Open(std::vector<std::string> shards, const LoaderOptions& options,
                                   std::shared_ptr<storage::ObjectStore> store = nullptr);

  // Open over the shards of `split` ("train" or "val") of the manifest at
  // `manifest_path` (a path or s3://bucket/key; S3 through the environment's
  // options, storage/s3_options.h); vocab_size defaults to the manifest's.
  static StatusOr<DataLoader> OpenSplit(const std::string& manifest_path, std::string_view split,
                                        LoaderOptions options);

  // OpenSplit over the manifest at `key` in `store`.
  static StatusOr<DataLoader> OpenSplit(std::shared_ptr<storage::ObjectStore> store,
                                        const std::string& key, std::string_view split,
                                        LoaderOptions options);

  DataLoader(DataLoader&&) = default;
  DataLoader& operator=(DataLoader&&) = default;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // This rank's next micro-batch, then advances (to the next step after the
  // step's last). ReadShard's errors when a shard is loaded; DataLoss when a
  // shard changed since Open.
  StatusOr<Batch> Next();

  // Where the next step starts (between steps; within one, where it began).
  const Position& position() const { return position_; }
  // The options in force (vocab_size filled in from the manifest by OpenSplit).
  const LoaderOptions& options() const { return options_; }

  // Continues from `position`, as saved from position() of a loader over the
  // same shards with the same seed. InvalidArgument for a shard index or
  // offset outside the shards.
  Status Seek(const Position& position);

  // Moves past the next `steps` steps without reading them (as `steps` x A
  // calls of Next() from a step's start would, minus the I/O): a rewound
  // run skips the data that made it diverge.
  void Skip(int64_t steps);

  // The order (indices into the shard list) in which epoch `epoch` reads them.
  std::vector<std::size_t> ShardOrder(int64_t epoch) const;

  // Tokens one step consumes across all ranks: A*W*B*T.
  int64_t tokens_per_step() const { return step_tokens_; }

 private:
  DataLoader(std::vector<std::string> paths, std::vector<int64_t> counts,
             const LoaderOptions& options, std::shared_ptr<storage::ObjectStore> store);
  // The given-list index of the shard `position_` is in.
  std::size_t CurrentShard();
  // Moves position_ forward until a whole step fits in its shard.
  void Normalize();

  std::vector<std::string> paths_;
  std::vector<int64_t> counts_;
  std::shared_ptr<storage::ObjectStore> store_;  // Null: paths_ are files.
  LoaderOptions options_;
  int64_t step_tokens_ = 0;
  Position position_;
  int micro_ = 0;                   // The next micro-batch of the step, in [0, A).
  std::vector<std::size_t> order_;  // ShardOrder(order_epoch_).
  int64_t order_epoch_ = -1;
  std::vector<uint16_t> tokens_;  // The loaded shard's tokens.
  std::optional<std::size_t> loaded_;
};

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_LOADER_H_
