// FetchS3Model: the local copy, in a cache folder, of a model that serve,
// eval or convert were given as an s3:// URI, for LoadModel (load_model.h) to
// verify and load like any file.
#ifndef KILN_WORKER_TRAIN_FETCH_MODEL_H_
#define KILN_WORKER_TRAIN_FETCH_MODEL_H_

#include <functional>
#include <string>

#include "base/statusor.h"

namespace kiln::train {

// `uri` names either one object (a kiln checkpoint file or an llm.c model),
// downloaded whole, or a prefix of object checkpoints
// (object_checkpoint_store.h), of which the newest that verifies against its
// manifest is downloaded (damaged ones reported through `warn` and skipped).
// The file goes to `cache_dir`/<its name> through a temporary file; returns
// its path. S3 settings come from the environment (storage/s3_options.h).
// NotFound when there is nothing at `uri`; DataLoss when every checkpoint
// under the prefix is damaged; Unavailable when the cache cannot be written;
// the store's errors otherwise.
StatusOr<std::string> FetchS3Model(const std::string& uri, const std::string& cache_dir,
                                   const std::function<void(const std::string&)>& warn);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_FETCH_MODEL_H_
