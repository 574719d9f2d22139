// The learning-rate schedule: linear warm-up to the peak, then cosine decay to
// min_ratio of it at the last step (as GPT-2 and llm.c train).
#ifndef KILN_WORKER_TRAIN_SCHEDULE_H_
#define KILN_WORKER_TRAIN_SCHEDULE_H_

#include <cmath>
#include <cstdint>

namespace kiln::train {

struct Schedule {
  double peak = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_ratio = 0.1;

  // The rate for 1-based `step`.
  double At(int64_t step) const {
    const double min_lr = peak * min_ratio;
    if (step <= warmup_steps) {
      return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
    }
    if (total_steps <= warmup_steps) return peak;
    const double progress =
        static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    const double p = progress > 1.0 ? 1.0 : progress;
    return min_lr + 0.5 * (1.0 + std::cos(M_PI * p)) * (peak - min_lr);
  }
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_SCHEDULE_H_
