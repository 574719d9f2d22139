// IoThreads: one Boost.Asio io_context and the threads that run it, shared by
// the servers and clients of a process so that a request and the calls it
// makes run on the same threads (kiln-router: its HttpServer and its
// upstream client) instead of handing every request from one pool to another.
// Thread-safe. The threads stop when the last holder lets go (or at Stop).
#ifndef KILN_BASE_IO_THREADS_H_
#define KILN_BASE_IO_THREADS_H_

#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace kiln {

class IoThreads {
 public:
  // Starts `threads` (at least 1) running the context.
  explicit IoThreads(int threads);
  ~IoThreads();  // Stop.
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  boost::asio::io_context& context() { return context_; }
  int threads() const { return static_cast<int>(threads_.size()); }
  // Stops the context and joins the threads; handlers not yet run never
  // will. Idempotent. Must not be called from one of the threads.
  void Stop();

 private:
  boost::asio::io_context context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

}  // namespace kiln

#endif  // KILN_BASE_IO_THREADS_H_
