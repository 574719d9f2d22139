#include "base/io_threads.h"

namespace kiln {

IoThreads::IoThreads(int threads) : work_(boost::asio::make_work_guard(context_)) {
  const int n = threads > 0 ? threads : 1;
  threads_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { context_.run(); });
}

IoThreads::~IoThreads() { Stop(); }

void IoThreads::Stop() {
  work_.reset();
  context_.stop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace kiln
