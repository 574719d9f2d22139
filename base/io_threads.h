// IoThreads: event loops for the servers and clients of a process, one
// Boost.Asio io_context per thread (nginx's and Envoy's model: a connection
// lives on one loop, and so does the work it starts). kiln-router's server
// hands each accepted connection to a loop in turn, and its upstream calls
// run on the loop of the thread that starts them, with that loop's pooled
// backend connections: a request and its backend call never cross threads,
// so nothing waits on a lock or wakes another thread on the way.
// Thread-safe. The threads stop at Stop or destruction.
#ifndef KILN_BASE_IO_THREADS_H_
#define KILN_BASE_IO_THREADS_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace kiln {

class IoThreads {
 public:
  // Starts `threads` (at least 1) loops, each run by its own thread.
  explicit IoThreads(int threads);
  ~IoThreads();  // Stop.
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  int threads() const { return static_cast<int>(loops_.size()); }
  boost::asio::io_context& context(int loop) { return loops_[static_cast<size_t>(loop)]->context; }
  // The loop the calling thread runs, or -1 when it is not one of these.
  int CurrentLoop() const;
  // The loop for new work: the calling thread's own; for another thread,
  // the loop it was given the first time it asked (the next in turn).
  int PickLoop();
  // The next loop in turn (for new connections, spreading them).
  int NextLoop();
  // Stops the loops and joins the threads; handlers not yet run never will.
  // Idempotent. Must not be called from one of the threads.
  void Stop();
  // After Stop(): runs, on the calling thread, the handlers left in the
  // loops' queues (mostly completions of operations cancelled as their
  // sockets closed), until none is ready, so that what they hold is let go.
  // An owner whose handlers hold it (a shared_ptr cycle through the queues)
  // calls it, or leaks. Must not be called from one of the threads.
  void RunLeftovers();

 private:
  struct Loop {
    // The default concurrency hint: with 1 (one thread runs the context),
    // kiln-worker serve's streams, written from its engine thread, were
    // sometimes never sent (the router benchmark's kiln-worker backends).
    Loop() : work(boost::asio::make_work_guard(context)) {}
    boost::asio::io_context context;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work;
    std::thread thread;
  };
  std::vector<std::unique_ptr<Loop>> loops_;
  std::atomic<unsigned> next_{0};
};

}  // namespace kiln

#endif  // KILN_BASE_IO_THREADS_H_
