// TrainMetrics: progress records become Prometheus series labelled by rank,
// and the JSON the TrainingJob controller reads at /progress.
#include "worker/train/train_metrics.h"

#include <catch2/catch.hpp>

#include "base/time_format.h"

namespace kiln::train {
namespace {

TEST_CASE("TrainMetrics exposes the progress records as gauges", "[train][metrics]") {
  TrainMetrics m(/*target_steps=*/500, /*rank=*/3);
  m.Observe({{"event", "resumed"}, {"step", 100}});
  m.Observe({{"event", "step"},
             {"step", 120},
             {"loss", 2.5},
             {"lr", 3e-4},
             {"gradNorm", 0.75},
             {"tokensPerSecond", 6000.0},
             {"mfu", 0.125}});
  m.Observe({{"event", "validation"}, {"step", 120}, {"valLoss", 2.75}});
  m.Observe({{"event", "checkpoint"}, {"step", 150}, {"path", "/x"}});
  m.Observe({{"event", "checkpoint"}, {"step", 200}, {"path", "/y"}});
  m.Observe({{"event", "warning"}, {"message", "ignored"}});
  const std::string text = m.Scrape();
  INFO(text);
  for (const char* line : {
           "kiln_train_step{rank=\"3\"} 120",
           "kiln_train_target_steps{rank=\"3\"} 500",
           "kiln_train_loss{rank=\"3\"} 2.5",
           "kiln_train_validation_loss{rank=\"3\"} 2.75",
           "kiln_train_learning_rate{rank=\"3\"} 0.0003",
           "kiln_train_grad_norm{rank=\"3\"} 0.75",
           "kiln_train_tokens_per_second{rank=\"3\"} 6000",
           "kiln_train_mfu{rank=\"3\"} 0.125",
           "kiln_train_last_checkpoint_step{rank=\"3\"} 200",
           "kiln_train_checkpoints_total{rank=\"3\"} 2",
           "kiln_train_resumed_step{rank=\"3\"} 100",
           "# TYPE kiln_train_checkpoints_total counter",
       }) {
    CHECK_THAT(text, Catch::Contains(std::string(line) + "\n"));
  }
}

TEST_CASE("TrainMetrics reports the progress as JSON named as the TrainingJob status",
          "[train][metrics]") {
  TrainMetrics m(/*target_steps=*/500, /*rank=*/0);
  CHECK(m.Progress() == nlohmann::json{{"step", 0}, {"targetSteps", 500}});
  m.Observe({{"event", "resumed"}, {"step", 100}});
  CHECK(m.Progress()["step"] == 100);
  CHECK_FALSE(m.Progress().contains("lastCheckpoint"));  // Not written by this process.
  m.Observe({{"event", "step"}, {"step", 150}, {"loss", 2.5}, {"tokensPerSecond", 6000.0}});
  m.Observe({{"event", "validation"}, {"step", 150}, {"valLoss", 2.75}});
  m.Observe({{"event", "checkpoint"}, {"step", 150}, {"path", "/checkpoints/run/step-150"}});
  nlohmann::json p = m.Progress();
  INFO(p.dump());
  CHECK(p["step"] == 150);
  CHECK(p["targetSteps"] == 500);
  CHECK(p["loss"] == 2.5);
  CHECK(p["validationLoss"] == 2.75);
  CHECK(p["tokensPerSecond"] == 6000.0);
  CHECK(p["lastCheckpoint"]["step"] == 150);
  CHECK(p["lastCheckpoint"]["uri"] == "file:///checkpoints/run/step-150");
  CHECK(p["lastCheckpoint"]["loss"] == 2.5);
  CHECK(ParseRfc3339(p["lastCheckpoint"]["time"].get<std::string>()).ok());
  // A checkpoint after a step that was not logged carries no loss.
  m.Observe({{"event", "checkpoint"}, {"step", 200}, {"path", "/checkpoints/run/step-200"}});
  p = m.Progress();
  CHECK(p["lastCheckpoint"]["step"] == 200);
  CHECK_FALSE(p["lastCheckpoint"].contains("loss"));
  // An object store's checkpoint is a URI already.
  m.Observe({{"event", "checkpoint"}, {"step", 250}, {"path", "s3://bucket/run/step-250.ckpt"}});
  CHECK(m.Progress()["lastCheckpoint"]["uri"] == "s3://bucket/run/step-250.ckpt");
  // The end: its loss and validation loss are the run's last, logged or not.
  m.Observe({{"event", "done"}, {"steps", 500}, {"loss", 2.0}, {"valLoss", 2.25}});
  p = m.Progress();
  CHECK(p["step"] == 500);
  CHECK(p["loss"] == 2.0);
  CHECK(p["validationLoss"] == 2.25);
}

}  // namespace
}  // namespace kiln::train
