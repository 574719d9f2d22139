#include "worker/data/loader.h"

#include <numeric>
#include <utility>

#include "worker/data/manifest.h"
#include "worker/data/shard.h"
#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"

namespace kiln::data {
namespace {

// splitmix64: a small generator whose output is fixed by its definition, so
// shuffles agree across machines (std::shuffle's are implementation-defined).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, without modulo bias.
  uint64_t Below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (true) {
      uint64_t r = Next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

StatusOr<int64_t> NonNegative(const nlohmann::json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end() || !it->is_number_integer()) {
    return Status::InvalidArgument(std::string("loader position: '") + key +
                                   "' must be an integer");
  }
  auto v = it->get<int64_t>();
  if (v < 0) {
    return Status::InvalidArgument(std::string("loader position: '") + key + "' is negative");
  }
  return v;
}

}  // namespace

nlohmann::json Position::ToJson() const {
  return {{"epoch", epoch}, {"shard", shard}, {"offset", offset}};
}

StatusOr<Position> Position::FromJson(const nlohmann::json& json) {
  if (!json.is_object()) return Status::InvalidArgument("loader position: not a JSON object");
  Position p;
  KILN_ASSIGN_OR_RETURN(p.epoch, NonNegative(json, "epoch"));
  KILN_ASSIGN_OR_RETURN(p.shard, NonNegative(json, "shard"));
  KILN_ASSIGN_OR_RETURN(p.offset, NonNegative(json, "offset"));
  return p;
}

StatusOr<DataLoader> DataLoader::Open(std::vector<std::string> shards, const LoaderOptions& options,
                                      std::shared_ptr<storage::ObjectStore> store) {
  const LoaderOptions& o = options;
  if (o.batch_size < 1 || o.seq_len < 1) {
    return Status::InvalidArgument(
        "data loader: batch size and sequence length must be >= 1, got " +
        std::to_string(o.batch_size) + " and " + std::to_string(o.seq_len));
  }
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return Status::InvalidArgument("data loader: rank " + std::to_string(o.rank) +
                                   " is outside [0, world size " + std::to_string(o.world_size) +
                                   ")");
  }
  if (o.accumulation < 1) {
    return Status::InvalidArgument("data loader: accumulation must be >= 1, got " +
                                   std::to_string(o.accumulation));
  }
  if (shards.empty()) return Status::InvalidArgument("data loader: no shards given");
  // Each factor is below 2^31, so no product overflows before the checks.
  const int64_t ranks_batch = int64_t{o.world_size} * o.batch_size;
  const int64_t step_sequences = ranks_batch * o.accumulation;
  if (ranks_batch > kMaxShardTokens || step_sequences > kMaxShardTokens ||
      step_sequences * o.seq_len >= kMaxShardTokens) {
    return Status::InvalidArgument(
        "data loader: a step of " +
        (o.accumulation > 1 ? "accumulation " + std::to_string(o.accumulation) + " x " : "") +
        "world " + std::to_string(o.world_size) + " x batch " + std::to_string(o.batch_size) +
        " x sequence " + std::to_string(o.seq_len) + " tokens is larger than any shard can be");
  }
  const int64_t need = step_sequences * o.seq_len + 1;
  std::vector<int64_t> counts;
  counts.reserve(shards.size());
  for (const std::string& path : shards) {
    KILN_ASSIGN_OR_RETURN(int64_t count,
                          store ? ShardTokenCount(*store, path) : ShardTokenCount(path));
    if (count < need) {
      return Status::FailedPrecondition(
          "data loader: token shard " + (store ? store->Describe(path) : path) + " holds " +
          std::to_string(count) + " tokens, fewer than the " + std::to_string(need) +
          " one step needs (" +
          (o.accumulation > 1 ? "accumulation " + std::to_string(o.accumulation) + " x " : "") +
          "world " + std::to_string(o.world_size) + " x batch " + std::to_string(o.batch_size) +
          " x sequence " + std::to_string(o.seq_len) + " + 1)");
    }
    counts.push_back(count);
  }
  return DataLoader(std::move(shards), std::move(counts), options, std::move(store));
}

StatusOr<DataLoader> DataLoader::OpenSplit(std::shared_ptr<storage::ObjectStore> store,
                                           const std::string& key, std::string_view split,
                                           LoaderOptions options) {
  const std::string where = store->Describe(key);
  KILN_ASSIGN_OR_RETURN(std::string text, store->Get(key));
  KILN_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(text, where));
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> keys, ShardPaths(manifest, key, split));
  if (keys.empty()) {
    return Status::FailedPrecondition("data manifest " + where + ": split '" + std::string(split) +
                                      "' has no shards");
  }
  if (options.vocab_size == 0) options.vocab_size = manifest.vocab_size;
  return Open(std::move(keys), options, std::move(store));
}

StatusOr<DataLoader> DataLoader::OpenSplit(const std::string& manifest_path, std::string_view split,
                                           LoaderOptions options) {
  if (storage::IsS3Uri(manifest_path)) {
    KILN_ASSIGN_OR_RETURN(storage::OpenedStore opened, storage::OpenS3Store(manifest_path));
    return OpenSplit(opened.store, opened.key, split, options);
  }
  KILN_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(manifest_path));
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> paths, ShardPaths(manifest, manifest_path, split));
  if (paths.empty()) {
    return Status::FailedPrecondition("data manifest " + manifest_path + ": split '" +
                                      std::string(split) + "' has no shards");
  }
  if (options.vocab_size == 0) options.vocab_size = manifest.vocab_size;
  return Open(std::move(paths), options);
}

DataLoader::DataLoader(std::vector<std::string> paths, std::vector<int64_t> counts,
                       const LoaderOptions& options, std::shared_ptr<storage::ObjectStore> store)
    : paths_(std::move(paths)),
      counts_(std::move(counts)),
      store_(std::move(store)),
      options_(options),
      step_tokens_(int64_t{options.accumulation} * options.world_size * options.batch_size *
                   options.seq_len) {}

std::vector<std::size_t> DataLoader::ShardOrder(int64_t epoch) const {
  std::vector<std::size_t> order(paths_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (!options_.shuffle_seed) return order;
  SplitMix64 epoch_mix(static_cast<uint64_t>(epoch));
  SplitMix64 rng(*options_.shuffle_seed ^ epoch_mix.Next());
  for (std::size_t i = order.size() - 1; i > 0; --i) {
    std::swap(order[i], order[rng.Below(i + 1)]);
  }
  return order;
}

std::size_t DataLoader::CurrentShard() {
  if (order_epoch_ != position_.epoch) {
    order_ = ShardOrder(position_.epoch);
    order_epoch_ = position_.epoch;
  }
  return order_[static_cast<std::size_t>(position_.shard)];
}

void DataLoader::Normalize() {
  // Open guarantees every shard holds a whole step, so this moves at most one shard.
  while (position_.offset + step_tokens_ + 1 > counts_[CurrentShard()]) {
    position_.offset = 0;
    if (++position_.shard == static_cast<int64_t>(paths_.size())) {
      position_.shard = 0;
      ++position_.epoch;
    }
  }
}

StatusOr<Batch> DataLoader::Next() {
  if (micro_ == 0) Normalize();
  const std::size_t shard = CurrentShard();
  if (loaded_ != shard) {
    loaded_.reset();
    KILN_ASSIGN_OR_RETURN(tokens_, store_ ? ReadShard(*store_, paths_[shard], options_.vocab_size)
                                          : ReadShard(paths_[shard], options_.vocab_size));
    if (static_cast<int64_t>(tokens_.size()) != counts_[shard]) {
      return Status::DataLoss("data loader: token shard " +
                              (store_ ? store_->Describe(paths_[shard]) : paths_[shard]) +
                              " now holds " + std::to_string(tokens_.size()) + " tokens, " +
                              std::to_string(counts_[shard]) + " when the loader opened it");
    }
    loaded_ = shard;
  }
  // Micro-batch m of rank r: sequences [(m*W + r)*B, (m*W + r + 1)*B) of the step.
  const int64_t rank_tokens = int64_t{options_.batch_size} * options_.seq_len;
  const int64_t slot = int64_t{micro_} * options_.world_size + options_.rank;
  const auto begin = tokens_.begin() + position_.offset + slot * rank_tokens;
  Batch batch;
  batch.inputs.assign(begin, begin + rank_tokens);
  batch.targets.assign(begin + 1, begin + rank_tokens + 1);
  batch.position = position_;
  if (++micro_ == options_.accumulation) {
    micro_ = 0;
    position_.offset += step_tokens_;
    Normalize();
  }
  return batch;
}

void DataLoader::Skip(int64_t steps) {
  micro_ = 0;
  for (int64_t i = 0; i < steps; ++i) {
    Normalize();
    position_.offset += step_tokens_;
  }
  Normalize();
}

Status DataLoader::Seek(const Position& position) {
  const auto shards = static_cast<int64_t>(paths_.size());
  if (position.epoch < 0 || position.shard < 0 || position.shard >= shards || position.offset < 0) {
    return Status::InvalidArgument(
        "data loader: cannot seek to epoch " + std::to_string(position.epoch) + " shard " +
        std::to_string(position.shard) + " of " + std::to_string(shards));
  }
  Position saved = position_;
  position_ = position;
  micro_ = 0;
  const int64_t count = counts_[CurrentShard()];
  if (position.offset > count) {
    position_ = saved;
    return Status::InvalidArgument(
        "data loader: cannot seek to offset " + std::to_string(position.offset) + " of shard " +
        std::to_string(position.shard) + ", which holds " + std::to_string(count) + " tokens");
  }
  Normalize();
  return Status::Ok();
}

}  // namespace kiln::data
