#include "router/endpoint.h"

#include <cerrno>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <sys/socket.h>

#include "base/http_server.h"

namespace kiln::router {

namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

namespace {

// True when the backend has closed (or reset) an idle connection, or sent
// something unasked: either way it cannot carry a request.
bool Stale(Endpoint::Socket& socket) {
  char byte;
  const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
  return true;
}

constexpr std::chrono::steady_clock::duration kFreshIdle = std::chrono::seconds(1);

}  // namespace

std::unique_ptr<Endpoint::Socket> Endpoint::TakeIdle(int loop,
                                                     std::chrono::steady_clock::duration max_idle) {
  const auto now = std::chrono::steady_clock::now();
  std::vector<Idle> dropped;  // Closed outside the lock.
  std::unique_ptr<Socket> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (loop < 0 || static_cast<size_t>(loop) >= idle_.size()) return nullptr;
    std::vector<Idle>& pool = idle_[static_cast<size_t>(loop)];
    while (!pool.empty()) {
      Idle idle = std::move(pool.back());
      pool.pop_back();
      // A connection used within the last second is taken without a look
      // (a syscall a request, at load): backends keep connections open for
      // far longer, and one closed anyway is met by the upstream's retry.
      const auto idle_for = now - idle.since;
      if (idle_for <= max_idle && (idle_for < kFreshIdle || !Stale(*idle.socket))) {
        taken = std::move(idle.socket);
        break;
      }
      dropped.push_back(std::move(idle));
    }
  }
  for (Idle& d : dropped) {
    boost::system::error_code ignored;
    d.socket->close(ignored);
  }
  return taken;
}

void Endpoint::PutIdle(int loop, std::unique_ptr<Socket> socket, size_t max_idle_connections) {
  if (loop >= 0) {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<size_t>(loop) >= idle_.size()) idle_.resize(static_cast<size_t>(loop) + 1);
    std::vector<Idle>& pool = idle_[static_cast<size_t>(loop)];
    if (pool.size() < max_idle_connections) {
      pool.push_back({std::move(socket), std::chrono::steady_clock::now()});
      return;
    }
  }
  boost::system::error_code ignored;
  socket->close(ignored);
}

void Endpoint::CloseIdle() {
  std::vector<std::vector<Idle>> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle.swap(idle_);
  }
  for (auto& pool : idle) {
    for (Idle& i : pool) {
      boost::system::error_code ignored;
      i.socket->close(ignored);
    }
  }
}

size_t Endpoint::idle_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& pool : idle_) n += pool.size();
  return n;
}

void EndpointRegistry::CloseIdle() {
  std::vector<std::shared_ptr<Endpoint>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [address, weak] : endpoints_) {
      if (auto e = weak.lock()) live.push_back(std::move(e));
    }
  }
  for (auto& e : live) e->CloseIdle();
}

StatusOr<std::shared_ptr<Endpoint>> EndpointRegistry::Get(const std::string& address) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = endpoints_.find(address);
    if (it != endpoints_.end()) {
      if (std::shared_ptr<Endpoint> e = it->second.lock()) return e;
    }
  }
  StatusOr<std::pair<std::string, int>> hp = ParseBindAddress(address);
  if (!hp.ok()) return hp.status();
  if (hp->first.empty()) {
    return Status::InvalidArgument("endpoint \"" + address + "\" has no host");
  }
  std::string host = hp->first;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  tcp::endpoint resolved;
  boost::system::error_code ec;
  net::ip::address ip = net::ip::make_address(host, ec);
  if (!ec) {
    resolved = tcp::endpoint(ip, static_cast<unsigned short>(hp->second));
  } else {
    net::io_context io;
    tcp::resolver resolver(io);
    auto results = resolver.resolve(host, std::to_string(hp->second), ec);
    if (ec || results.empty()) {
      return Status::NotFound("endpoint \"" + address + "\": " + host +
                              " does not resolve: " + ec.message());
    }
    resolved = results.begin()->endpoint();
  }
  auto e = std::make_shared<Endpoint>(address, resolved);
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = endpoints_[address];
  if (std::shared_ptr<Endpoint> existing = slot.lock()) return existing;  // Lost a race.
  slot = e;
  // Forget addresses no table holds any more.
  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    it = it->second.expired() ? endpoints_.erase(it) : std::next(it);
  }
  return e;
}

}  // namespace kiln::router
