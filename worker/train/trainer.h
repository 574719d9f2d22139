// Trainer: the training loop of `kiln-worker train` on the CPU or a GPU model
// (train_model.h), alone or as one rank of a data-parallel job — micro-batches from the data loader
// with gradient accumulation, gradients averaged over the ranks, global-norm gradient clipping,
// AdamW on the warm-up + cosine schedule, periodic validation loss, and a JSON progress record per
// logged step. A non-finite loss or gradient norm, or a loss spike beyond the configured factor,
// stops the run with a NumericsFault. With a checkpoint directory it saves periodically
// (checkpoint.h) and resumes exactly from the newest intact checkpoint.
//
// Data parallel: every rank runs the same options with its own share of each
// step's batch (loader.h); gradients and losses are summed through the
// Communicator and divided by the world size, so W ranks with batch B follow
// the trajectory of one process with batch W*B (up to summation order). Rank 0
// alone reads and writes checkpoints and sends the starting state to the
// others, so only rank 0 needs the checkpoint volume. A stop request on any
// rank stops all of them after the same step.
#ifndef KILN_WORKER_TRAIN_TRAINER_H_
#define KILN_WORKER_TRAIN_TRAINER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/data/loader.h"
#include "worker/dist/communicator.h"
#include "worker/model/gpt.h"
#include "worker/train/checkpoint.h"
#include "worker/train/checkpoint_store.h"
#include "worker/train/schedule.h"
#include "worker/train/train_model.h"

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
  // Where checkpoints go (a directory, file:///path or s3://bucket/prefix:
  // checkpoint_store.h); empty disables them. A run whose store holds
  // checkpoints resumes from the newest intact one.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 100;  // Steps; the last step and a stop also save.
  int checkpoint_keep = 3;
  // A rewind after the run diverged (the operator sets it after a
  // LossDiverged exit, docs/trainingjob.md): rank 0 deletes the checkpoints
  // of this step and later before it resumes, so the run resumes from the
  // newest intact one before it (the newest may already hold the diverged
  // state). 0: off.
  int64_t rewind_before_step = 0;
  // Skips the data of the steps after the resumed one through this one, so
  // a rewound run does not replay the batches it diverged on (PaLM's remedy
  // for loss spikes); the position after the skip is saved at once as the
  // resumed step's checkpoint, so a restart before the next checkpoint
  // skips it too. 0 (or a step not after the resumed one): nothing skipped.
  int64_t skip_data_through_step = 0;
  // The fence token of this gang (fence.h: the job's UID and the attempt;
  // the operator passes it). Rank 0 claims the checkpoint location with it
  // on start and checks it before each checkpoint and every
  // `fence_check_interval`; a gang whose token is superseded stops without
  // writing (Superseded). Unset: no fence (a run outside the operator).
  std::optional<CheckpointWriter> fence;
  std::chrono::milliseconds fence_check_interval{30000};
  // This rank's peak FLOP/s, for the MFU in step records; 0: not reported.
  double peak_flops = 0;
};

// Training FLOPs per token of a model with `params` parameters at context
// `seq_len`: 6 per parameter (forward and backward matmuls) plus the
// attention scores and values, 12 * layers * channels * seq_len (the
// PaLM/llm.c accounting).
double TrainingFlopsPerToken(const model::GptConfig& config, int64_t params, int seq_len);

// Marks a run stopped by a NaN/Inf loss or gradient (exit code NumericsFault).
class NumericsFault final : public StatusDetail {};
inline bool IsNumericsFault(const Status& s) { return s.detail<NumericsFault>() != nullptr; }

class Trainer {
 public:
  // InvalidArgument naming the first bad option (without opening the data).
  static Status CheckOptions(const TrainOptions& options);
  // InvalidArgument for bad options; the loader's errors for bad data; the
  // factory's errors. `comm` (not owned; null: a single process) carries the
  // control traffic (losses, the stop vote, the starting state) and must
  // outlive the Trainer. `make_model` builds the model once the config is
  // final (null: the CPU model, its gradients summed through `comm`).
  static StatusOr<std::unique_ptr<Trainer>> Create(TrainOptions options,
                                                   dist::Communicator* comm = nullptr,
                                                   TrainModelFactory make_model = nullptr);

  // Trains until options.steps or `*stop` (on any rank); `progress` gets one JSON object
  // per logged step ("event": "step"), validation ("validation"), resume
  // ("resumed"), checkpoint ("checkpoint"), a skipped damaged checkpoint
  // ("warning"), a rewind ("rewound": the checkpoints deleted) and data
  // skipped ("skipped": steps, the new position), and the end ("done",
  // naming the device, the step reached and, when this run trained any
  // step, the last one's loss). Step records carry step, loss, lr,
  // gradNorm, msPerStep, tokensPerSecond (all ranks together) and, with a
  // peak, mfu (this rank's model FLOPs over its peak).
  Status Run(const std::function<void(const nlohmann::json&)>& progress,
             const std::atomic<bool>* stop = nullptr);

  TrainModel& model() { return *model_; }
  // The last step whose update was applied (0 before the first).
  int64_t completed_step() const { return completed_step_; }

 private:
  Trainer(TrainOptions options, dist::Communicator* comm, std::unique_ptr<TrainModel> model,
          data::DataLoader train, std::optional<data::DataLoader> val)
      : options_(std::move(options)),
        comm_(comm),
        model_(std::move(model)),
        train_(std::move(train)),
        val_(std::move(val)) {}
  StatusOr<double> Validate();
  // Rank 0 restores the newest checkpoint (if any) and every rank receives
  // its state; returns the restored step (0 for a fresh start).
  StatusOr<int64_t> Restore(const std::function<void(const nlohmann::json&)>& progress);

  TrainOptions options_;
  std::unique_ptr<dist::Communicator> own_comm_;  // When none was given.
  dist::Communicator* comm_;
  std::unique_ptr<TrainModel> model_;
  data::DataLoader train_;
  std::optional<data::DataLoader> val_;
  std::unique_ptr<CheckpointStore> checkpoints_;  // Rank 0's, once Restore opened it.
  int64_t completed_step_ = 0;
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_TRAINER_H_
