#include "base/stop_signal.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <thread>

namespace kiln {
namespace {

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

StopSignal& StopSignal::Install() {
  static StopSignal* instance = [] {
    sigset_t set = StopSignals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    auto* s = new StopSignal();  // Lives for the process; its thread never ends.
    std::thread([s] { s->Loop(); }).detach();
    return s;
  }();
  return *instance;
}

void StopSignal::Loop() {
  sigset_t set = StopSignals();
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (requested_.load()) {
      static const char kMsg[] = "second stop signal: exiting without waiting\n";
      // Nothing to do when stderr is gone: the process exits either way.
      (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
      _exit(1);
    }
    signal_ = sig;
    Request();
  }
}

void StopSignal::Request() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = true;
  }
  cv_.notify_all();
}

bool StopSignal::WaitFor(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return requested_.load(); });
}

}  // namespace kiln
