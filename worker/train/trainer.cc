#include "worker/train/trainer.h"

#include <chrono>
#include <cmath>
#include <optional>

#include "worker/train/fence.h"
#include "worker/train/loss_spike.h"

namespace kiln::train {
namespace {

std::vector<int32_t> Widen(const std::vector<uint16_t>& tokens) {
  return std::vector<int32_t>(tokens.begin(), tokens.end());
}

Status Numerics(const std::string& what) {
  return Status::Aborted(what).WithDetail(std::make_shared<NumericsFault>());
}

}  // namespace

double TrainingFlopsPerToken(const model::GptConfig& c, int64_t params, int seq_len) {
  return 6.0 * static_cast<double>(params) +
         12.0 * c.num_layers * static_cast<double>(c.channels) * seq_len;
}

Status Trainer::CheckOptions(const TrainOptions& o) {
  auto bad = [](const std::string& why) { return Status::InvalidArgument(why); };
  if (o.manifest.empty()) return bad("no data: give the manifest.json that prepare wrote");
  if (o.batch_size < 1 || o.seq_len < 1) return bad("batch size and sequence length must be >= 1");
  if (o.grad_accumulation < 1) return bad("grad accumulation must be >= 1");
  if (o.steps < 1) return bad("steps must be >= 1");
  if (!(o.learning_rate > 0)) return bad("learning rate must be positive");
  if (o.warmup_steps < 0 || o.warmup_steps > o.steps) return bad("warmup must be in [0, steps]");
  if (o.min_lr_ratio < 0 || o.min_lr_ratio > 1) return bad("min lr ratio must be in [0, 1]");
  if (o.grad_clip < 0) return bad("grad clip must be >= 0");
  if (o.loss_spike_factor != 0 && !(o.loss_spike_factor > 1)) {
    return bad("loss spike factor must be 0 (off) or above 1");
  }
  if (o.log_every < 1 || o.val_batches < 1) return bad("log every and val batches must be >= 1");
  if (o.checkpoint_every < 1 || o.checkpoint_keep < 1) {
    return bad("checkpoint every and checkpoint keep must be >= 1");
  }
  if (!(o.peak_flops >= 0)) return bad("peak FLOP/s must be >= 0");
  if (o.rewind_before_step < 0 || o.skip_data_through_step < 0) {
    return bad("rewind before step and skip data through step must be >= 0");
  }
  if (o.rewind_before_step > 0 && o.checkpoint_dir.empty()) {
    return bad("a rewind needs the checkpoint directory it rewinds");
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainOptions o, dist::Communicator* comm,
                                                   TrainModelFactory make_model) {
  KILN_RETURN_IF_ERROR(CheckOptions(o));
  std::unique_ptr<dist::Communicator> own_comm;
  if (comm == nullptr) {
    own_comm = dist::NewSingleProcessCommunicator();
    comm = own_comm.get();
  }
  data::LoaderOptions lo{.batch_size = o.batch_size,
                         .seq_len = o.seq_len,
                         .rank = comm->rank(),
                         .world_size = comm->world_size(),
                         .accumulation = o.grad_accumulation};
  lo.shuffle_seed = o.seed;
  KILN_ASSIGN_OR_RETURN(auto train, data::DataLoader::OpenSplit(o.manifest, "train", lo));
  lo.shuffle_seed.reset();
  lo.accumulation = 1;  // Validation batches are single passes.
  // Validation is optional: a manifest without val shards, or with too few
  // tokens for one batch, trains without it. Any other problem is an error.
  std::optional<data::DataLoader> val;
  auto v = data::DataLoader::OpenSplit(o.manifest, "val", lo);
  if (v.ok()) {
    val = std::move(*v);
  } else if (v.status().code() != StatusCode::kFailedPrecondition &&
             v.status().code() != StatusCode::kInvalidArgument) {
    return v.status();
  }

  if (o.model.max_seq_len < o.seq_len) o.model.max_seq_len = o.seq_len;
  o.model.vocab_size = train.options().vocab_size > 0 ? train.options().vocab_size : 257;
  o.model.padded_vocab_size = model::GptConfig::PadVocab(o.model.vocab_size);
  if (!make_model) {
    make_model = [comm](const model::GptConfig& c, uint64_t seed) {
      return NewCpuTrainModel(c, seed, comm);
    };
  }
  KILN_ASSIGN_OR_RETURN(auto model, make_model(o.model, o.seed));
  std::unique_ptr<Trainer> trainer(
      new Trainer(std::move(o), comm, std::move(model), std::move(train), std::move(val)));
  trainer->own_comm_ = std::move(own_comm);
  return trainer;
}

StatusOr<double> Trainer::Validate() {
  if (!val_) return std::nan("");
  // Always the same batches: the start of the validation split.
  KILN_RETURN_IF_ERROR(val_->Seek(data::Position{}));
  double sum = 0;
  for (int i = 0; i < options_.val_batches; ++i) {
    KILN_ASSIGN_OR_RETURN(data::Batch b, val_->Next());
    auto in = Widen(b.inputs), tg = Widen(b.targets);
    KILN_ASSIGN_OR_RETURN(
        float loss, model_->Forward(in.data(), tg.data(), options_.batch_size, options_.seq_len));
    sum += static_cast<double>(loss);
  }
  KILN_RETURN_IF_ERROR(comm_->AllReduceSum(&sum, 1));
  return sum / (options_.val_batches * comm_->world_size());
}

StatusOr<int64_t> Trainer::Restore(const std::function<void(const nlohmann::json&)>& progress) {
  const TrainOptions& o = options_;
  nlohmann::json head = {{"step", 0}};
  Status failed;
  if (comm_->rank() == 0 && !o.checkpoint_dir.empty()) {
    auto warn = [&](const std::string& message) {
      progress({{"event", "warning"}, {"message", message}});
    };
    // Opens the store, rewinds it when asked (the checkpoints from the
    // divergence on go first) and restores the newest intact checkpoint.
    // With a fence token it first checks that no newer attempt holds the
    // location, restores only what the fence allows, then claims the fence
    // with the step it resumes from (fence.h).
    auto restore = [&]() -> StatusOr<std::optional<CheckpointState>> {
      KILN_ASSIGN_OR_RETURN(checkpoints_, OpenCheckpointStore(o.checkpoint_dir));
      std::optional<Fence> fence;
      if (o.fence) {
        KILN_ASSIGN_OR_RETURN(fence, ReadFenceFor(*checkpoints_, *o.fence, true));
      }
      if (o.rewind_before_step > 0) {
        KILN_ASSIGN_OR_RETURN(const int discarded, checkpoints_->DiscardFrom(o.rewind_before_step));
        progress(
            {{"event", "rewound"}, {"before", o.rewind_before_step}, {"discarded", discarded}});
      }
      CheckpointFilter accept;
      if (fence) accept = [&](const CheckpointState& s) { return CheckWrittenUnder(*fence, s); };
      KILN_ASSIGN_OR_RETURN(auto restored,
                            checkpoints_->RestoreAccepted(model_->host(), warn, accept));
      if (o.fence && DecideFence(fence, *o.fence, true) != FenceAction::kHold) {
        const int64_t base = restored ? restored->step : 0;
        KILN_RETURN_IF_ERROR(checkpoints_->WriteFence(EncodeFence({*o.fence, base})));
        progress({{"event", "fenced"},
                  {"job", o.fence->job},
                  {"attempt", o.fence->attempt},
                  {"baseStep", base}});
      }
      return restored;
    };
    auto restored = restore();
    if (!restored.ok()) {
      failed = restored.status();
    } else if (*restored && (*restored)->seed && *(*restored)->seed != o.seed) {
      failed = Status::InvalidArgument(
          "the newest checkpoint was written by a run with seed " +
          std::to_string(*(*restored)->seed) + ", this run has seed " + std::to_string(o.seed) +
          ": the data order would differ; resume with the same seed or a new checkpoint dir");
    } else if (*restored) {
      head = {{"step", (*restored)->step},
              {"position", (*restored)->position.ToJson()},
              {"restored", true}};
    }
    if (!failed.ok()) {
      head = {{"error", failed.message()},
              {"code", static_cast<int>(failed.code())},
              {"superseded", IsSuperseded(failed)}};
    }
  }
  if (comm_->world_size() > 1) {
    // Rank 0's outcome, then its whole state: every rank starts identical.
    std::string text = head.dump();
    uint64_t len = text.size();
    KILN_RETURN_IF_ERROR(comm_->Broadcast(&len, sizeof len, 0));
    text.resize(len);
    KILN_RETURN_IF_ERROR(comm_->Broadcast(text.data(), static_cast<int64_t>(len), 0));
    head = nlohmann::json::parse(text, nullptr, false);
    if (head.is_discarded()) return Status::Internal("rank 0 sent a malformed start state");
    if (head.contains("error")) {
      if (!failed.ok()) return failed;
      Status theirs(static_cast<StatusCode>(head.value("code", 13)),
                    "rank 0 could not restore: " + head.value("error", ""));
      // Every rank of a superseded gang ends as Superseded (exit 8).
      if (head.value("superseded", false))
        theirs = theirs.WithDetail(std::make_shared<Superseded>());
      return theirs;
    }
    model::Gpt<float>& host = model_->host();
    for (std::span<float> t : {host.params(), host.adam_m(), host.adam_v()}) {
      KILN_RETURN_IF_ERROR(comm_->Broadcast(t.data(), static_cast<int64_t>(t.size_bytes()), 0));
    }
  }
  if (!failed.ok()) return failed;
  // Restored or received, the host state is now the model's. (A step-0
  // checkpoint holds imported weights: kiln-worker convert from llm.c.)
  const bool restored = head.value("restored", false);
  if (restored || comm_->world_size() > 1) KILN_RETURN_IF_ERROR(model_->LoadFromHost());
  const int64_t step = head.value("step", int64_t{0});
  if (restored) {
    KILN_ASSIGN_OR_RETURN(auto position, data::Position::FromJson(head.at("position")));
    KILN_RETURN_IF_ERROR(train_.Seek(position));
    completed_step_ = step;
    progress({{"event", "resumed"}, {"step", step}, {"position", position.ToJson()}});
  }
  return step;
}

Status Trainer::Run(const std::function<void(const nlohmann::json&)>& report,
                    const std::atomic<bool>* stop) {
  const TrainOptions& o = options_;
  const int world = comm_->world_size();
  // In a data-parallel job every record says which rank wrote it.
  auto progress = [&](nlohmann::json j) {
    if (world > 1) j["rank"] = comm_->rank();
    report(j);
  };
  const Schedule schedule{.peak = o.learning_rate,
                          .warmup_steps = o.warmup_steps,
                          .total_steps = o.steps,
                          .min_ratio = o.min_lr_ratio};
  const auto run_start = std::chrono::steady_clock::now();
  // Tokens of a step across all ranks.
  const double tokens_per_step =
      static_cast<double>(o.batch_size) * o.seq_len * o.grad_accumulation * world;
  // This rank's model FLOPs per step.
  const double flops_per_step =
      TrainingFlopsPerToken(model_->config(), model_->num_parameters(), o.seq_len) *
      tokens_per_step / world;
  // The loss of this run's last step: none when it resumed at its final
  // step (a restart after the end), which the done line then leaves out
  // rather than report a loss it never measured.
  std::optional<double> last_loss;
  double val_loss = std::nan("");
  KILN_ASSIGN_OR_RETURN(const int64_t restored_step, Restore(progress));
  // Rank 0's fence check (fence.h): the step it resumed from or last
  // saved is the base should it take the fence over from an older attempt.
  int64_t fence_base = restored_step;
  auto last_fence_check = std::chrono::steady_clock::now();
  auto keep_fence = [&]() -> Status {
    if (checkpoints_ == nullptr || !o.fence) return Status::Ok();
    last_fence_check = std::chrono::steady_clock::now();
    return KeepFence(*checkpoints_, *o.fence, fence_base);
  };
  auto save = [&](int64_t done_step) -> Status {
    if (checkpoints_ == nullptr) return Status::Ok();  // Off, or not rank 0.
    KILN_RETURN_IF_ERROR(model_->SyncToHost());
    KILN_RETURN_IF_ERROR(keep_fence());  // As late as can be before the write.
    KILN_ASSIGN_OR_RETURN(
        std::string path,
        checkpoints_->Write(
            model_->host(),
            {.step = done_step, .position = train_.position(), .seed = o.seed, .writer = o.fence},
            o.checkpoint_keep));
    fence_base = done_step;
    progress({{"event", "checkpoint"}, {"step", done_step}, {"path", path}});
    return Status::Ok();
  };
  if (o.skip_data_through_step > restored_step) {
    // Every rank skips alike (the options are the same everywhere).
    const int64_t skipped = o.skip_data_through_step - restored_step;
    train_.Skip(skipped);
    progress({{"event", "skipped"},
              {"step", restored_step},
              {"steps", skipped},
              {"position", train_.position().ToJson()}});
    KILN_RETURN_IF_ERROR(save(restored_step));
  }
  LossSpikeDetector spikes(o.loss_spike_factor);
  for (int64_t step = restored_step + 1; step <= o.steps; ++step) {
    // A stop requested on any rank stops every rank before the same step.
    double stopping = stop != nullptr && stop->load() ? 1.0 : 0.0;
    // So does a lost fence, which rank 0 checks every interval and before a
    // step that saves, so that no rank waits on a peer that left.
    Status fence_lost;
    if (checkpoints_ != nullptr && o.fence &&
        (step % o.checkpoint_every == 0 || step == o.steps ||
         std::chrono::steady_clock::now() - last_fence_check >= o.fence_check_interval)) {
      fence_lost = keep_fence();
      if (!fence_lost.ok() && !IsSuperseded(fence_lost)) {
        // The storage did not answer: tried again next interval, and the
        // checkpoint's own write reports a lasting outage.
        progress({{"event", "warning"},
                  {"message", "cannot check the checkpoint fence: " + fence_lost.message()}});
        fence_lost = Status::Ok();
      }
    }
    double superseded = fence_lost.ok() ? 0.0 : 1.0;
    if (world > 1) {
      double votes[2] = {stopping, superseded};
      KILN_RETURN_IF_ERROR(comm_->AllReduceSum(votes, 2));
      stopping = votes[0];
      superseded = votes[1];
    }
    if (superseded > 0) {
      if (!fence_lost.ok()) return fence_lost;
      return SupersededError("rank 0 found a newer attempt holding the checkpoints");
    }
    if (stopping > 0) {
      // Keep the work done since the last periodic checkpoint.
      if (step - 1 > restored_step && (step - 1) % o.checkpoint_every != 0) {
        KILN_RETURN_IF_ERROR(save(step - 1));
      }
      break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    KILN_RETURN_IF_ERROR(model_->ZeroGrad());
    double loss = 0;
    for (int micro = 0; micro < o.grad_accumulation; ++micro) {
      KILN_ASSIGN_OR_RETURN(data::Batch b, train_.Next());
      auto in = Widen(b.inputs), tg = Widen(b.targets);
      KILN_ASSIGN_OR_RETURN(float l,
                            model_->Forward(in.data(), tg.data(), o.batch_size, o.seq_len));
      loss += static_cast<double>(l);
      KILN_RETURN_IF_ERROR(model_->Backward(1.0f / static_cast<float>(o.grad_accumulation)));
    }
    // Sum the loss and the gradients over the ranks (every rank then holds
    // the same values bit for bit); the average is the sum over the world
    // size, which the norm divides out and the update multiplies in.
    loss /= o.grad_accumulation;
    if (world > 1) {
      KILN_RETURN_IF_ERROR(comm_->AllReduceSum(&loss, 1));
      loss /= world;
      KILN_RETURN_IF_ERROR(model_->AllReduceGrads());
    }
    KILN_ASSIGN_OR_RETURN(double norm, model_->GradNorm());
    norm /= world;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      return Numerics("step " + std::to_string(step) + ": loss " + std::to_string(loss) +
                      ", gradient norm " + std::to_string(norm) + " (not finite)");
    }
    if (spikes.Observe(loss)) {
      return Numerics("step " + std::to_string(step) + ": loss " + std::to_string(loss) +
                      " spiked above " + std::to_string(o.loss_spike_factor) +
                      " x its recent average " + std::to_string(spikes.level()));
    }
    double grad_scale = 1.0 / world;
    if (o.grad_clip > 0 && norm > o.grad_clip) grad_scale *= o.grad_clip / norm;
    const double lr = schedule.At(step);
    KILN_RETURN_IF_ERROR(model_->Update({.learning_rate = static_cast<float>(lr),
                                         .weight_decay = static_cast<float>(o.weight_decay),
                                         .step = step},
                                        static_cast<float>(grad_scale)));
    completed_step_ = step;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    last_loss = loss;
    if (step % o.log_every == 0 || step == 1 || step == o.steps) {
      nlohmann::json record = {{"event", "step"},
                               {"step", step},
                               {"loss", loss},
                               {"lr", lr},
                               {"gradNorm", norm},
                               {"msPerStep", ms},
                               {"tokensPerSecond", tokens_per_step / (ms / 1000.0)}};
      if (o.peak_flops > 0) record["mfu"] = flops_per_step / (ms / 1000.0) / o.peak_flops;
      progress(record);
    }
    if ((o.val_every > 0 && step % o.val_every == 0) || step == o.steps) {
      KILN_ASSIGN_OR_RETURN(val_loss, Validate());
      if (val_) progress({{"event", "validation"}, {"step", step}, {"valLoss", val_loss}});
    }
    if (step % o.checkpoint_every == 0 || step == o.steps) KILN_RETURN_IF_ERROR(save(step));
  }
  nlohmann::json done = {
      {"event", "done"},
      {"device", model_->device()},
      {"steps", completed_step_},
      {"seconds",
       std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()}};
  if (last_loss) done["loss"] = *last_loss;
  if (std::isfinite(val_loss)) done["valLoss"] = val_loss;
  progress(done);
  return Status::Ok();
}

}  // namespace kiln::train
