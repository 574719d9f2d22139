#include "worker/train/trainer.h"

#include <chrono>
#include <cmath>

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

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainOptions o) {
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

  data::LoaderOptions lo{.batch_size = o.batch_size, .seq_len = o.seq_len};
  lo.shuffle_seed = o.seed;
  KILN_ASSIGN_OR_RETURN(auto train, data::DataLoader::OpenSplit(o.manifest, "train", lo));
  lo.shuffle_seed.reset();
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
  KILN_ASSIGN_OR_RETURN(auto model, model::Gpt<float>::Create(o.model, o.seed));
  return std::unique_ptr<Trainer>(
      new Trainer(std::move(o), std::move(model), std::move(train), std::move(val)));
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
        float loss, model_.Forward(in.data(), tg.data(), options_.batch_size, options_.seq_len));
    sum += static_cast<double>(loss);
  }
  return sum / options_.val_batches;
}

Status Trainer::Run(const std::function<void(const nlohmann::json&)>& progress,
                    const std::atomic<bool>* stop) {
  const TrainOptions& o = options_;
  const Schedule schedule{.peak = o.learning_rate,
                          .warmup_steps = o.warmup_steps,
                          .total_steps = o.steps,
                          .min_ratio = o.min_lr_ratio};
  const auto run_start = std::chrono::steady_clock::now();
  const double tokens_per_step =
      static_cast<double>(o.batch_size) * o.seq_len * o.grad_accumulation;
  double last_loss = 0, val_loss = std::nan("");
  int64_t first_step = 1;
  if (!o.checkpoint_dir.empty()) {
    auto warn = [&](const std::string& message) {
      progress({{"event", "warning"}, {"message", message}});
    };
    KILN_ASSIGN_OR_RETURN(auto restored, RestoreLatestCheckpoint(o.checkpoint_dir, model_, warn));
    if (restored) {
      KILN_RETURN_IF_ERROR(train_.Seek(restored->position));
      first_step = restored->step + 1;
      completed_step_ = restored->step;
      progress({{"event", "resumed"},
                {"step", restored->step},
                {"position", restored->position.ToJson()}});
    }
  }
  auto save = [&](int64_t done_step) -> Status {
    if (o.checkpoint_dir.empty()) return Status::Ok();
    KILN_ASSIGN_OR_RETURN(
        std::string path,
        WriteCheckpoint(o.checkpoint_dir, model_,
                        {.step = done_step, .position = train_.position()}, o.checkpoint_keep));
    progress({{"event", "checkpoint"}, {"step", done_step}, {"path", path}});
    return Status::Ok();
  };
  LossSpikeDetector spikes(o.loss_spike_factor);
  int64_t step = 0;
  for (step = first_step; step <= o.steps; ++step) {
    if (stop != nullptr && stop->load()) {
      // Keep the work done since the last periodic checkpoint.
      if (step > first_step && (step - 1) % o.checkpoint_every != 0) {
        KILN_RETURN_IF_ERROR(save(step - 1));
      }
      break;
    }
    if (stop != nullptr && stop->load()) break;
    const auto t0 = std::chrono::steady_clock::now();
    model_.ZeroGrad();
    double loss = 0;
    for (int micro = 0; micro < o.grad_accumulation; ++micro) {
      KILN_ASSIGN_OR_RETURN(data::Batch b, train_.Next());
      auto in = Widen(b.inputs), tg = Widen(b.targets);
      KILN_ASSIGN_OR_RETURN(float l, model_.Forward(in.data(), tg.data(), o.batch_size, o.seq_len));
      loss += static_cast<double>(l);
      KILN_RETURN_IF_ERROR(model_.Backward(1.0f / static_cast<float>(o.grad_accumulation)));
    }
    loss /= o.grad_accumulation;
    const double norm = kernels::cpu::GlobalNorm(model_.grads().data(),
                                                 static_cast<int64_t>(model_.grads().size()));
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      return Numerics("step " + std::to_string(step) + ": loss " + std::to_string(loss) +
                      ", gradient norm " + std::to_string(norm) + " (not finite)");
    }
    if (spikes.Observe(loss)) {
      return Numerics("step " + std::to_string(step) + ": loss " + std::to_string(loss) +
                      " spiked above " + std::to_string(o.loss_spike_factor) +
                      " x its recent average " + std::to_string(spikes.level()));
    }
    if (o.grad_clip > 0 && norm > o.grad_clip) {
      const float scale = static_cast<float>(o.grad_clip / norm);
      for (float& g : model_.grads()) g *= scale;
    }
    const double lr = schedule.At(step);
    model_.Update({.learning_rate = static_cast<float>(lr),
                   .weight_decay = static_cast<float>(o.weight_decay),
                   .step = step});
    completed_step_ = step;
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    last_loss = loss;
    if (step % o.log_every == 0 || step == 1 || step == o.steps) {
      progress({{"event", "step"},
                {"step", step},
                {"loss", loss},
                {"lr", lr},
                {"gradNorm", norm},
                {"msPerStep", ms},
                {"tokensPerSecond", tokens_per_step / (ms / 1000.0)}});
    }
    if ((o.val_every > 0 && step % o.val_every == 0) || step == o.steps) {
      KILN_ASSIGN_OR_RETURN(val_loss, Validate());
      if (val_) progress({{"event", "validation"}, {"step", step}, {"valLoss", val_loss}});
    }
    if (step % o.checkpoint_every == 0 || step == o.steps) KILN_RETURN_IF_ERROR(save(step));
  }
  nlohmann::json done = {
      {"event", "done"},
      {"steps", step - 1},
      {"loss", last_loss},
      {"seconds",
       std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()}};
  if (std::isfinite(val_loss)) done["valLoss"] = val_loss;
  progress(done);
  return Status::Ok();
}

}  // namespace kiln::train
