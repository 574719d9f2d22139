#include "worker/train/train_metrics.h"

#include <chrono>

#include <prometheus/text_serializer.h>

#include "base/time_format.h"

namespace kiln::train {

TrainMetrics::LazyGauge& TrainMetrics::Lazy(const std::string& name, const std::string& help) {
  LazyGauge& g = gauges_[name];
  g.family = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  return g;
}

TrainMetrics::TrainMetrics(int64_t target_steps, int rank)
    : registry_(std::make_shared<prometheus::Registry>()), rank_(std::to_string(rank)) {
  Lazy("kiln_train_step", "Last logged training step (and the last one)");
  Lazy("kiln_train_target_steps", "Steps the run is configured for");
  Lazy("kiln_train_loss", "Training loss of the last logged step");
  Lazy("kiln_train_validation_loss", "Loss of the last validation");
  Lazy("kiln_train_learning_rate", "Learning rate of the last logged step");
  Lazy("kiln_train_grad_norm", "Global gradient norm before clipping, last logged step");
  Lazy("kiln_train_tokens_per_second",
       "Training tokens per second over all ranks, last logged step");
  Lazy("kiln_train_mfu",
       "Model FLOPs utilisation of this rank (0-1) against its peak, last logged step");
  Lazy("kiln_train_last_checkpoint_step", "Step of the last checkpoint written or resumed from");
  Lazy("kiln_train_resumed_step", "Step the run resumed from its checkpoint (0: a fresh start)");
  checkpoints_ = &prometheus::BuildCounter()
                      .Name("kiln_train_checkpoints_total")
                      .Help("Checkpoints written by this process")
                      .Register(*registry_)
                      .Add({{"rank", rank_}});
  Set("kiln_train_target_steps", static_cast<double>(target_steps));
  Set("kiln_train_step", 0);
  Set("kiln_train_resumed_step", 0);
  progress_ = {{"step", 0}, {"targetSteps", target_steps}};
}

void TrainMetrics::Set(const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  LazyGauge& g = gauges_.at(name);
  if (g.gauge == nullptr) g.gauge = &g.family->Add({{"rank", rank_}});
  g.gauge->Set(value);
}

void TrainMetrics::Observe(const nlohmann::json& record) {
  const std::string event = record.value("event", "");
  auto copy = [&](const char* key, const std::string& name) {
    auto it = record.find(key);
    if (it != record.end() && it->is_number()) Set(name, it->get<double>());
  };
  if (event == "step") {
    copy("step", "kiln_train_step");
    copy("loss", "kiln_train_loss");
    copy("lr", "kiln_train_learning_rate");
    copy("gradNorm", "kiln_train_grad_norm");
    copy("tokensPerSecond", "kiln_train_tokens_per_second");
    copy("mfu", "kiln_train_mfu");
  } else if (event == "validation") {
    copy("valLoss", "kiln_train_validation_loss");
  } else if (event == "checkpoint") {
    copy("step", "kiln_train_last_checkpoint_step");
    checkpoints_->Increment();
  } else if (event == "resumed") {
    copy("step", "kiln_train_resumed_step");
    copy("step", "kiln_train_step");
    copy("step", "kiln_train_last_checkpoint_step");
  } else if (event == "done") {
    copy("steps", "kiln_train_step");
  }
  UpdateProgress(event, record);
}

void TrainMetrics::UpdateProgress(const std::string& event, const nlohmann::json& record) {
  auto number = [&](const char* key) -> const nlohmann::json* {
    auto it = record.find(key);
    return it != record.end() && it->is_number() ? &*it : nullptr;
  };
  std::lock_guard<std::mutex> lock(mu_);
  if (event == "step") {
    for (const char* key : {"step", "loss", "tokensPerSecond"}) {
      if (const auto* v = number(key)) progress_[key] = *v;
    }
  } else if (event == "validation") {
    if (const auto* v = number("valLoss")) progress_["validationLoss"] = *v;
  } else if (event == "resumed") {
    if (const auto* v = number("step")) progress_["step"] = *v;
  } else if (event == "done") {
    // The run's last loss and validation loss, whether or not the last step
    // was logged: what the job's status keeps once the worker is gone.
    if (const auto* v = number("steps")) progress_["step"] = *v;
    if (const auto* v = number("loss")) progress_["loss"] = *v;
    if (const auto* v = number("valLoss")) progress_["validationLoss"] = *v;
  } else if (event == "checkpoint") {
    const auto* step = number("step");
    auto path = record.find("path");
    if (step == nullptr || path == record.end() || !path->is_string()) return;
    // A file checkpoint's path becomes a file:// URI; an object store's
    // (s3://bucket/key) is a URI already.
    const std::string& where = path->get_ref<const std::string&>();
    nlohmann::json checkpoint = {
        {"step", *step},
        {"uri", where.find("://") == std::string::npos ? "file://" + where : where},
        {"time", FormatRfc3339(std::chrono::system_clock::now())}};
    // The loss of the step it was taken after, when that step was logged.
    if (progress_.value("step", int64_t{-1}) == step->get<int64_t>() &&
        progress_.contains("loss")) {
      checkpoint["loss"] = progress_["loss"];
    }
    progress_["lastCheckpoint"] = checkpoint;
  }
}

nlohmann::json TrainMetrics::Progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  return progress_;
}

std::string TrainMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace kiln::train
