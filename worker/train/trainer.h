// Trainer: the single-process training loop of `kiln-worker train` on the CPU
// model — micro-batches from the data loader with gradient accumulation,
// global-norm gradient clipping, AdamW on the warm-up + cosine schedule,
// periodic validation loss, and a JSON progress record per logged step. A
// non-finite loss or gradient norm, or a loss spike beyond the configured
// factor, stops the run with a NumericsFault.
// With a checkpoint directory it saves periodically (checkpoint.h) and
// resumes exactly from the newest intact checkpoint.
#ifndef KILN_WORKER_TRAIN_TRAINER_H_
#define KILN_WORKER_TRAIN_TRAINER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/data/loader.h"
#include "worker/model/gpt.h"
#include "worker/train/checkpoint.h"
#include "worker/train/schedule.h"

namespace kiln::train {

struct TrainOptions {
  std::string manifest;    // From `kiln-worker prepare`.
  model::GptConfig model;  // vocab from the manifest; max_seq_len defaults to seq_len.
  int batch_size = 4;      // Sequences per micro-batch.
  int seq_len = 64;
  int grad_accumulation = 1;  // Micro-batches per optimizer step.
  int64_t steps = 100;
  double learning_rate = 3e-4;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // Max global gradient norm; 0 disables clipping.
  // A loss above this many times its recent average is a NumericsFault
  // (loss_spike.h); 0 disables the check.
  double loss_spike_factor = 0;
  int64_t val_every = 0;  // Steps between validation runs; 0: only at the end.
  int val_batches = 4;
  int64_t log_every = 1;
  uint64_t seed = 1337;
  // Where checkpoints go; empty disables them. A run whose directory holds
  // checkpoints resumes from the newest intact one.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 100;  // Steps; the last step and a stop also save.
  int checkpoint_keep = 3;
};

// Marks a run stopped by a NaN/Inf loss or gradient (exit code NumericsFault).
class NumericsFault final : public StatusDetail {};
inline bool IsNumericsFault(const Status& s) { return s.detail<NumericsFault>() != nullptr; }

class Trainer {
 public:
  // InvalidArgument for bad options; the loader's errors for bad data.
  static StatusOr<std::unique_ptr<Trainer>> Create(TrainOptions options);

  // Trains until options.steps or `*stop`; `progress` gets one JSON object
  // per logged step ("event": "step"), validation ("validation"), resume
  // ("resumed"), checkpoint ("checkpoint"), a skipped damaged checkpoint
  // ("warning") and the end ("done").
  Status Run(const std::function<void(const nlohmann::json&)>& progress,
             const std::atomic<bool>* stop = nullptr);

  model::Gpt<float>& model() { return model_; }
  // The last step whose update was applied (0 before the first).
  int64_t completed_step() const { return completed_step_; }

 private:
  Trainer(TrainOptions options, model::Gpt<float> model, data::DataLoader train,
          std::optional<data::DataLoader> val)
      : options_(std::move(options)),
        model_(std::move(model)),
        train_(std::move(train)),
        val_(std::move(val)) {}
  StatusOr<double> Validate();

  TrainOptions options_;
  model::Gpt<float> model_;
  data::DataLoader train_;
  std::optional<data::DataLoader> val_;
  int64_t completed_step_ = 0;
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_TRAINER_H_
