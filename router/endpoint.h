// Endpoint: one serving backend ("10.0.0.5:8000") as the router sees it:
// its load (requests outstanding from this router, and the queue depth the
// backend last reported) and its idle keep-alive connections. The
// EndpointRegistry hands out one Endpoint per address for as long as any
// route table holds it, so load and pooled connections carry over when a new
// table is swapped in; an endpoint no table names is dropped with its
// connections.
#ifndef KILN_ROUTER_ENDPOINT_H_
#define KILN_ROUTER_ENDPOINT_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "base/statusor.h"

namespace kiln::router {

class Endpoint {
 public:
  using Socket = boost::asio::ip::tcp::socket;

  Endpoint(std::string address, boost::asio::ip::tcp::endpoint resolved)
      : address_(std::move(address)), resolved_(resolved) {}
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  const std::string& address() const { return address_; }
  const boost::asio::ip::tcp::endpoint& resolved() const { return resolved_; }

  // Lower is less loaded: this router's outstanding requests, or the queue
  // depth the backend last reported (x-kiln-queue-depth) when that is more,
  // which counts other routers' requests too.
  int Load() const {
    const int own = outstanding.load(std::memory_order_relaxed);
    const int reported = reported_queue_depth.load(std::memory_order_relaxed);
    return own > reported ? own : reported;
  }

  std::atomic<int> outstanding{0};
  std::atomic<int> reported_queue_depth{0};

  // A pooled connection of I/O loop `loop` (a socket serves only the loop
  // it was made on, router/upstream.h), or null. Skips connections idle past
  // `max_idle`, and those idle for a second or more that the backend has
  // closed (a peek sees EOF or an error).
  std::unique_ptr<Socket> TakeIdle(int loop, std::chrono::steady_clock::duration max_idle);
  // Keeps `socket`, made on loop `loop`, for reuse (up to
  // `max_idle_connections` a loop; past that it is closed).
  void PutIdle(int loop, std::unique_ptr<Socket> socket, size_t max_idle_connections);
  size_t idle_count() const;  // All loops.
  void CloseIdle();

 private:
  struct Idle {
    std::unique_ptr<Socket> socket;
    std::chrono::steady_clock::time_point since;
  };
  const std::string address_;
  const boost::asio::ip::tcp::endpoint resolved_;
  mutable std::mutex mu_;
  std::vector<std::vector<Idle>> idle_;  // By loop; guarded by mu_; newest last.
};

class EndpointRegistry {
 public:
  // The Endpoint for "host:port" (an IP address or a name resolved now),
  // shared with every table that names it. InvalidArgument for a malformed
  // address, NotFound when a name does not resolve.
  StatusOr<std::shared_ptr<Endpoint>> Get(const std::string& address);
  // Closes every live endpoint's pooled connections (before their I/O
  // context goes).
  void CloseIdle();

 private:
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<Endpoint>> endpoints_;  // Guarded by mu_.
};

}  // namespace kiln::router

#endif  // KILN_ROUTER_ENDPOINT_H_
