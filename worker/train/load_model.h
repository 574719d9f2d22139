// LoadModel: the model a command serves, evaluates or converts, from any file
// kiln reads — a kiln checkpoint file, a directory of kiln checkpoints (its
// newest intact one), or an llm.c model file (llmc_checkpoint.h).
#ifndef KILN_WORKER_TRAIN_LOAD_MODEL_H_
#define KILN_WORKER_TRAIN_LOAD_MODEL_H_

#include <functional>
#include <string>

#include "base/statusor.h"
#include "worker/model/gpt.h"

namespace kiln::train {

struct LoadedModel {
  model::Gpt<float> model;
  std::string path;    // The file the weights came from.
  std::string format;  // "kiln" or "llm.c".
};

// Every tensor is verified as its format allows (a kiln checkpoint's
// SHA-256s; an llm.c file's size against its header). With `sha256`, a file
// whose SHA-256 differs counts as damaged too. In a directory, a damaged
// checkpoint is reported through `warn` and skipped for the one before it.
// NotFound when there is nothing at `path` (or no checkpoint in the
// directory); DataLoss when nothing there is intact (the last damage found);
// InvalidArgument for a header whose shape kiln cannot build.
StatusOr<LoadedModel> LoadModel(const std::string& path, const std::string& sha256,
                                const std::function<void(const std::string&)>& warn);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_LOAD_MODEL_H_
