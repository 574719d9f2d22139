#include "worker/data/manifest.h"

#include <filesystem>

#include "base/file.h"
#include "base/json_integer.h"
#include "worker/data/atomic_file.h"

namespace kiln::data {
namespace {

using nlohmann::json;

json SplitToJson(const ManifestSplit& split) {
  json shards = json::array();
  for (const auto& s : split.shards) {
    shards.push_back({{"file", s.file}, {"tokens", s.tokens}, {"sha256", s.sha256}});
  }
  return {{"documents", split.documents}, {"tokens", split.tokens}, {"shards", shards}};
}

ManifestSplit SplitFromJson(const json& j) {
  ManifestSplit split;
  split.documents = IntegerAt<int64_t>(j, "documents");
  split.tokens = IntegerAt<int64_t>(j, "tokens");
  for (const auto& s : j.at("shards")) {
    split.shards.push_back({.file = s.at("file").get<std::string>(),
                            .tokens = IntegerAt<int64_t>(s, "tokens"),
                            .sha256 = s.at("sha256").get<std::string>()});
  }
  return split;
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

}  // namespace

const ManifestSplit* Manifest::Split(std::string_view name) const {
  if (name == "train") return &train;
  if (name == "val") return &val;
  return nullptr;
}

nlohmann::json ManifestToJson(const Manifest& manifest) {
  json inputs = json::array();
  for (const auto& in : manifest.inputs) {
    inputs.push_back({{"path", in.path},
                      {"format", in.format},
                      {"bytes", in.bytes},
                      {"documents", in.documents},
                      {"sha256", in.sha256}});
  }
  return {{"formatVersion", manifest.format_version},
          {"tokenizer", manifest.tokenizer},
          {"vocabSize", manifest.vocab_size},
          {"eot", manifest.eot},
          {"valFraction", manifest.val_fraction},
          {"shardTokens", manifest.shard_tokens},
          {"inputs", inputs},
          {"splits", {{"train", SplitToJson(manifest.train)}, {"val", SplitToJson(manifest.val)}}}};
}

StatusOr<Manifest> ParseManifest(std::string_view text, const std::string& source) {
  Manifest m;
  try {
    json j = json::parse(text);
    m.format_version = IntegerAt<int>(j, "formatVersion");
    if (m.format_version != kManifestFormatVersion) {
      return Status::InvalidArgument("data manifest " + source + ": unsupported formatVersion " +
                                     std::to_string(m.format_version) + ", want " +
                                     std::to_string(kManifestFormatVersion));
    }
    m.tokenizer = j.at("tokenizer").get<std::string>();
    m.vocab_size = IntegerAt<int>(j, "vocabSize");
    m.eot = IntegerAt<int>(j, "eot");
    m.val_fraction = j.at("valFraction").get<double>();
    m.shard_tokens = IntegerAt<int64_t>(j, "shardTokens");
    for (const auto& in : j.at("inputs")) {
      m.inputs.push_back({.path = in.at("path").get<std::string>(),
                          .format = in.at("format").get<std::string>(),
                          .bytes = IntegerAt<int64_t>(in, "bytes"),
                          .documents = IntegerAt<int64_t>(in, "documents"),
                          .sha256 = in.at("sha256").get<std::string>()});
    }
    m.train = SplitFromJson(j.at("splits").at("train"));
    m.val = SplitFromJson(j.at("splits").at("val"));
  } catch (const json::exception& e) {
    return Status::InvalidArgument("data manifest " + source + ": " + e.what());
  }
  for (const ManifestSplit* split : {&m.train, &m.val}) {
    for (const auto& s : split->shards) {
      if (!IsPlainFileName(s.file)) {
        return Status::InvalidArgument("data manifest " + source + ": shard file '" + s.file +
                                       "' is not a file name in the manifest's directory");
      }
    }
  }
  return m;
}

StatusOr<Manifest> ReadManifest(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseManifest(text, path);
}

Status WriteManifest(const std::string& path, const Manifest& manifest) {
  std::string text = ManifestToJson(manifest).dump(2) + "\n";
  KILN_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(path));
  KILN_RETURN_IF_ERROR(file.Append(text.data(), text.size()));
  return file.Commit();
}

StatusOr<std::vector<std::string>> ShardPaths(const Manifest& manifest,
                                              const std::string& manifest_path,
                                              std::string_view split) {
  const ManifestSplit* s = manifest.Split(split);
  if (s == nullptr) {
    return Status::InvalidArgument("data manifest " + manifest_path + ": no split '" +
                                   std::string(split) + "' (want train or val)");
  }
  std::filesystem::path dir = std::filesystem::path(manifest_path).parent_path();
  std::vector<std::string> paths;
  for (const auto& shard : s->shards) paths.push_back((dir / shard.file).string());
  return paths;
}

StatusOr<std::vector<std::string>> ManifestShardPaths(const std::string& manifest_path,
                                                      std::string_view split) {
  KILN_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(manifest_path));
  return ShardPaths(manifest, manifest_path, split);
}

}  // namespace kiln::data
