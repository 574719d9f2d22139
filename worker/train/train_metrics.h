// TrainMetrics: a training run's progress as Prometheus metrics and as one
// JSON object, fed the same JSON records the trainer prints (trainer.h), so
// all three always agree. Served by `kiln-worker train
// --metrics-bind-address` at /metrics and /progress (the TrainingJob
// controller reads rank 0's /progress through the pod proxy). Thread-safe.
//
//   kiln_train_step                  last logged step (every --log-every, and the last)
//   kiln_train_target_steps          steps the run is configured for
//   kiln_train_loss                  training loss of the last logged step
//   kiln_train_validation_loss       loss of the last validation
//   kiln_train_learning_rate         learning rate of the last logged step
//   kiln_train_grad_norm             global gradient norm (before clipping)
//   kiln_train_tokens_per_second     all ranks together, last logged step
//   kiln_train_mfu                   model FLOPs utilisation, 0-1 (with a peak)
//   kiln_train_last_checkpoint_step  step of the last checkpoint written
//   kiln_train_checkpoints_total     checkpoints written by this process
//   kiln_train_resumed_step          step the run resumed from (0: fresh)
// A series without a value yet (no validation, no MFU peak) is not exposed.
#ifndef KILN_WORKER_TRAIN_TRAIN_METRICS_H_
#define KILN_WORKER_TRAIN_TRAIN_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace kiln::train {

class TrainMetrics {
 public:
  // `rank` becomes a label on every series (pods of one job share a name).
  TrainMetrics(int64_t target_steps, int rank);

  // Updates the series from one progress record; other records are ignored.
  void Observe(const nlohmann::json& record);

  // The Prometheus text exposition of every series.
  std::string Scrape() const;

  // The progress as JSON, named as a TrainingJob's status names it: step and
  // targetSteps always; loss, validationLoss and tokensPerSecond once
  // logged; lastCheckpoint {step, uri (file://<path>, or the object store's
  // s3://bucket/key), time (when this
  // process saw it written), loss (when that step was logged)} once this
  // process wrote one.
  nlohmann::json Progress() const;

 private:
  // A gauge whose series appears with its first value.
  struct LazyGauge {
    prometheus::Family<prometheus::Gauge>* family = nullptr;
    prometheus::Gauge* gauge = nullptr;
  };
  LazyGauge& Lazy(const std::string& name, const std::string& help);
  void Set(const std::string& name, double value);
  void UpdateProgress(const std::string& event, const nlohmann::json& record);

  std::shared_ptr<prometheus::Registry> registry_;
  std::string rank_;
  mutable std::mutex mu_;                    // Guards creating series, and progress_.
  std::map<std::string, LazyGauge> gauges_;  // By metric name.
  nlohmann::json progress_;                  // Progress(); guarded by mu_.
  prometheus::Counter* checkpoints_;
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_TRAIN_METRICS_H_
