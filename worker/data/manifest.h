// Manifest: the description `kiln-worker prepare` writes beside the shards it
// makes (manifest.json): the tokenizer, the inputs it read and, per split
// (train, val), the shards with their token counts and SHA-256 checksums.
// Loaders find a split's shards through it. docs/data.md shows an example.
// Plain values; thread-compatible.
#ifndef KILN_WORKER_DATA_MANIFEST_H_
#define KILN_WORKER_DATA_MANIFEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"

namespace kiln::data {

inline constexpr int kManifestFormatVersion = 1;
inline constexpr const char* kManifestFileName = "manifest.json";

struct ManifestInput {
  std::string path;    // As given to prepare, joined with the entry name for directories.
  std::string format;  // "fortunes" or "text": how it was split into documents.
  int64_t bytes = 0;
  int64_t documents = 0;
  std::string sha256;
};

struct ManifestShard {
  std::string file;  // A file name in the manifest's directory.
  int64_t tokens = 0;
  std::string sha256;  // Of the whole shard file, header included.
};

struct ManifestSplit {
  int64_t documents = 0;
  int64_t tokens = 0;  // EOTs included; the sum of the shards' tokens.
  std::vector<ManifestShard> shards;
};

struct Manifest {
  int format_version = kManifestFormatVersion;
  std::string tokenizer = "byte";
  int vocab_size = 0;
  int eot = 0;
  double val_fraction = 0;
  int64_t shard_tokens = 0;
  std::vector<ManifestInput> inputs;
  ManifestSplit train;
  ManifestSplit val;

  // The split named "train" or "val"; nullptr for any other name.
  const ManifestSplit* Split(std::string_view name) const;
};

nlohmann::json ManifestToJson(const Manifest& manifest);

// Parses manifest JSON; `source` names it in errors. InvalidArgument for bad
// JSON, a missing or mistyped field, an unsupported formatVersion or a shard
// file name that is not a plain name in the same directory.
StatusOr<Manifest> ParseManifest(std::string_view json, const std::string& source);

// Reads and parses the manifest at `path`; ReadFile's errors when unreadable.
StatusOr<Manifest> ReadManifest(const std::string& path);

// Writes `manifest` to `path` atomically, as indented JSON with a final newline.
Status WriteManifest(const std::string& path, const Manifest& manifest);

// The paths of the shards of `split` ("train" or "val") of `manifest`, read
// from `manifest_path`, in order. InvalidArgument for an unknown split name.
StatusOr<std::vector<std::string>> ShardPaths(const Manifest& manifest,
                                              const std::string& manifest_path,
                                              std::string_view split);

// ShardPaths of the manifest at `manifest_path`; ReadManifest's errors too.
StatusOr<std::vector<std::string>> ManifestShardPaths(const std::string& manifest_path,
                                                      std::string_view split);

}  // namespace kiln::data

#endif  // KILN_WORKER_DATA_MANIFEST_H_
