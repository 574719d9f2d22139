#include "worker/train/load_model.h"

#include <filesystem>
#include <vector>

#include "worker/data/checksum.h"
#include "worker/train/checkpoint.h"
#include "worker/train/llmc_checkpoint.h"

namespace kiln::train {

StatusOr<LoadedModel> LoadModel(const std::string& path, const std::string& sha256,
                                const std::function<void(const std::string&)>& warn) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status::NotFound(path + ": no such file");
  std::vector<std::string> candidates = {path};
  const bool directory = std::filesystem::is_directory(path, ec);
  if (directory) {
    KILN_ASSIGN_OR_RETURN(candidates, ListCheckpoints(path));
    if (candidates.empty()) return Status::NotFound("no checkpoints in " + path);
  }
  Status last;
  for (const std::string& file : candidates) {
    if (!sha256.empty()) {
      KILN_ASSIGN_OR_RETURN(std::string sum, data::Sha256File(file));
      if (sum != sha256) {
        last = Status::DataLoss(file + ": SHA-256 " + sum + ", want " + sha256);
        if (directory) warn(last.message());
        continue;
      }
    }
    if (!directory && IsLlmcCheckpoint(file)) {
      KILN_ASSIGN_OR_RETURN(model::Gpt<float> m, ReadLlmcCheckpoint(file));
      return LoadedModel{std::move(m), file, "llm.c"};
    }
    auto config = ReadCheckpointConfig(file);
    if (!config.ok()) {
      last = config.status();
      if (directory) warn("skipping " + last.ToString());
      continue;
    }
    KILN_ASSIGN_OR_RETURN(model::Gpt<float> m, model::Gpt<float>::Create(*config, 0));
    auto state = LoadCheckpoint(file, m);
    if (!state.ok()) {
      last = state.status();
      if (directory) warn("skipping " + last.ToString());
      continue;
    }
    return LoadedModel{std::move(m), file, "kiln"};
  }
  return last.ok() ? Status::DataLoss("no usable checkpoint in " + path) : last;
}

}  // namespace kiln::train
