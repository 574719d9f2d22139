// LossSpikeDetector: flags a training loss that jumps far above its recent
// level — the early sign of a diverging run (a bad batch, a flaky GPU, too
// high a learning rate) before it turns into NaN. The level is an
// exponential moving average of past losses; a loss above factor x that
// level, once `warmup` losses have been seen, is a spike. Spikes do not
// update the level.
#ifndef KILN_WORKER_TRAIN_LOSS_SPIKE_H_
#define KILN_WORKER_TRAIN_LOSS_SPIKE_H_

#include <cstdint>

namespace kiln::train {

class LossSpikeDetector {
 public:
  // factor <= 0 disables detection.
  LossSpikeDetector(double factor, int64_t warmup = 20, double decay = 0.9)
      : factor_(factor), warmup_(warmup), decay_(decay) {}

  // True when `loss` is a spike.
  bool Observe(double loss) {
    if (factor_ <= 0) return false;
    if (seen_ >= warmup_ && loss > factor_ * level_) return true;
    level_ = seen_ == 0 ? loss : decay_ * level_ + (1 - decay_) * loss;
    ++seen_;
    return false;
  }
  double level() const { return level_; }

 private:
  double factor_;
  int64_t warmup_;
  double decay_;
  double level_ = 0;
  int64_t seen_ = 0;
};

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_LOSS_SPIKE_H_
