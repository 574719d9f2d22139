// TrainMetrics: progress records become Prometheus series labelled by rank.
#include "worker/train/train_metrics.h"

#include <catch2/catch.hpp>

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

}  // namespace
}  // namespace kiln::train
