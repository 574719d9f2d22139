#include "base/io_threads.h"

namespace kiln {
namespace {

// Which IoThreads, and which of its loops, the calling thread runs.
thread_local const IoThreads* current_owner = nullptr;
thread_local int current_loop = -1;
// The loop a thread outside the loops was given, so that its calls keep to
// one loop (and its pooled connections).
thread_local const IoThreads* foreign_owner = nullptr;
thread_local int foreign_loop = -1;

}  // namespace

IoThreads::IoThreads(int threads) {
  const int n = threads > 0 ? threads : 1;
  loops_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) loops_.push_back(std::make_unique<Loop>());
  for (int i = 0; i < n; ++i) {
    loops_[static_cast<size_t>(i)]->thread = std::thread([this, i] {
      current_owner = this;
      current_loop = i;
      loops_[static_cast<size_t>(i)]->context.run();
    });
  }
}

IoThreads::~IoThreads() { Stop(); }

int IoThreads::CurrentLoop() const { return current_owner == this ? current_loop : -1; }

int IoThreads::PickLoop() {
  const int own = CurrentLoop();
  if (own >= 0) return own;
  if (foreign_owner != this) {
    foreign_owner = this;
    foreign_loop = NextLoop();
  }
  return foreign_loop;
}

int IoThreads::NextLoop() {
  return static_cast<int>(next_.fetch_add(1, std::memory_order_relaxed) % loops_.size());
}

void IoThreads::Stop() {
  for (auto& loop : loops_) {
    loop->work.reset();
    loop->context.stop();
  }
  for (auto& loop : loops_) {
    if (loop->thread.joinable()) loop->thread.join();
  }
}

void IoThreads::RunLeftovers() {
  for (auto& loop : loops_) {
    loop->context.restart();
    loop->context.poll();
  }
}

}  // namespace kiln
