#include "worker/dist/socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "base/duration.h"
#include "worker/dist/communicator.h"

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;

// Socket errors are Unavailable whatever the errno, not base/errno_status.h's
// code: a peer that is not up yet or went away is what the rendezvous retries
// and what the trainer reports as a communication fault.
std::string Errno(int err) { return std::strerror(err); }

Status Closed(const std::string& who, const std::string& how) {
  return CommunicationError(StatusCode::kUnavailable, who + " " + how);
}

void Tune(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int PollMillis(Millis left) { return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1000)); }

// Tries one address once: a non-blocking connect finished within `timeout`.
StatusOr<Socket> TryConnect(const addrinfo& ai, Millis timeout) {
  Socket s(::socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai.ai_protocol));
  if (!s.valid()) return Status::Unavailable("socket: " + Errno(errno));
  if (::connect(s.fd(), ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return Status::Unavailable(Errno(errno));
    pollfd p{s.fd(), POLLOUT, 0};
    int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (rc == 0) return Status::Unavailable("connect timed out");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (rc < 0 || err != 0) return Status::Unavailable(Errno(rc < 0 ? errno : err));
  }
  Tune(s.fd());
  return s;
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<int> Socket::LocalPort() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::Internal("getsockname: " + Errno(errno));
  }
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

StatusOr<std::string> Socket::PeerHost() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::Internal("getpeername: " + Errno(errno));
  }
  char host[NI_MAXHOST];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, nullptr, 0,
                    NI_NUMERICHOST) != 0) {
    return Status::Internal("getnameinfo failed");
  }
  std::string h = host;
  if (h.rfind("::ffff:", 0) == 0 && h.find('.') != std::string::npos) h = h.substr(7);
  return h;
}

StatusOr<Socket> Listen(int port) {
  auto bind_listen = [port](int family) -> StatusOr<Socket> {
    Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s.valid()) return Status::Unavailable("socket: " + Errno(errno));
    int one = 1, zero = 0;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET6) {
      ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0 || ::listen(s.fd(), 128) != 0) {
      return Status::Unavailable("cannot listen on port " + std::to_string(port) + ": " +
                                 Errno(errno));
    }
    return s;
  };
  auto v6 = bind_listen(AF_INET6);
  if (v6.ok()) return v6;
  auto v4 = bind_listen(AF_INET);
  if (v4.ok()) return v4;
  return v4.status();
}

StatusOr<Socket> Accept(const Socket& listener, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (s.valid()) {
      Tune(s.fd());
      return s;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      return Status::Unavailable("accept: " + Errno(errno));
    }
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) {
      return CommunicationError(StatusCode::kDeadlineExceeded,
                                "no peer connected within " + FormatDuration(timeout));
    }
    pollfd p{listener.fd(), POLLIN, 0};
    ::poll(&p, 1, PollMillis(left));
  }
}

StatusOr<Socket> Connect(const std::string& host, int port, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string where = host + ":" + std::to_string(port);
  std::string last_error;
  Millis backoff(50);
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
    if (rc != 0) {
      last_error = std::string("cannot resolve: ") + ::gai_strerror(rc);
    } else {
      for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
        auto s = TryConnect(*ai, Millis(2000));
        if (s.ok()) {
          ::freeaddrinfo(list);
          return s;
        }
        last_error = s.status().message();
      }
      ::freeaddrinfo(list);
    }
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) {
      return CommunicationError(StatusCode::kDeadlineExceeded,
                                "cannot connect to " + where + " within " +
                                    FormatDuration(timeout) + " (last error: " + last_error + ")");
    }
    std::this_thread::sleep_for(std::min(backoff, left));
    backoff = std::min(backoff * 2, Millis(1000));
  }
}

Status SendRecv(const Socket& out, const void* send_data, size_t send_n, const std::string& out_who,
                const Socket& in, void* recv_data, size_t recv_n, const std::string& in_who,
                Millis timeout) {
  const auto* sp = static_cast<const char*>(send_data);
  auto* rp = static_cast<char*>(recv_data);
  size_t sent = 0, got = 0;
  auto progress = Clock::now();
  while (sent < send_n || got < recv_n) {
    pollfd fds[2];
    int n = 0, si = -1, ri = -1;
    if (sent < send_n) {
      fds[n] = {out.fd(), POLLOUT, 0};
      si = n++;
    }
    if (got < recv_n) {
      fds[n] = {in.fd(), POLLIN, 0};
      ri = n++;
    }
    const auto left = timeout - std::chrono::duration_cast<Millis>(Clock::now() - progress);
    if (left.count() <= 0) {
      const std::string what = got < recv_n ? "no data from " + in_who : out_who + " took no data";
      return CommunicationError(
          StatusCode::kDeadlineExceeded,
          what + " for " + FormatDuration(timeout) + " (hung, or the network is partitioned)");
    }
    int rc = ::poll(fds, static_cast<nfds_t>(n), PollMillis(left));
    if (rc < 0 && errno != EINTR) return Status::Internal("poll: " + Errno(errno));
    if (rc <= 0) continue;
    if (si >= 0 && fds[si].revents != 0) {
      ssize_t k =
          ::send(out.fd(), sp + sent, std::min<size_t>(send_n - sent, 1 << 20), MSG_NOSIGNAL);
      if (k > 0) {
        sent += static_cast<size_t>(k);
        progress = Clock::now();
      } else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return Closed(out_who, "closed the connection (" + Errno(errno) + ")");
      }
    }
    if (ri >= 0 && fds[ri].revents != 0) {
      ssize_t k = ::recv(in.fd(), rp + got, recv_n - got, 0);
      if (k > 0) {
        got += static_cast<size_t>(k);
        progress = Clock::now();
      } else if (k == 0) {
        return Closed(in_who, "closed the connection (it exited or failed)");
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return Closed(in_who, "closed the connection (" + Errno(errno) + ")");
      }
    }
  }
  return Status::Ok();
}

Status SendAll(const Socket& s, const void* data, size_t n, Millis timeout,
               const std::string& who) {
  return SendRecv(s, data, n, who, s, nullptr, 0, who, timeout);
}

Status RecvAll(const Socket& s, void* data, size_t n, Millis timeout, const std::string& who) {
  return SendRecv(s, nullptr, 0, who, s, data, n, who, timeout);
}

Status SendMessage(const Socket& s, const std::string& message, Millis timeout,
                   const std::string& who) {
  const auto n = static_cast<uint32_t>(message.size());
  const unsigned char len[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                                static_cast<unsigned char>(n >> 16),
                                static_cast<unsigned char>(n >> 24)};
  KILN_RETURN_IF_ERROR(SendAll(s, len, 4, timeout, who));
  return SendAll(s, message.data(), message.size(), timeout, who);
}

StatusOr<std::string> RecvMessage(const Socket& s, Millis timeout, const std::string& who) {
  unsigned char len[4];
  KILN_RETURN_IF_ERROR(RecvAll(s, len, 4, timeout, who));
  const uint32_t n =
      uint32_t{len[0]} | uint32_t{len[1]} << 8 | uint32_t{len[2]} << 16 | uint32_t{len[3]} << 24;
  if (n > (16u << 20)) {
    return Status::InvalidArgument(who + " sent a " + std::to_string(n) +
                                   "-byte rendezvous message: not a kiln worker?");
  }
  std::string message(n, '\0');
  KILN_RETURN_IF_ERROR(RecvAll(s, message.data(), n, timeout, who));
  return message;
}

}  // namespace kiln::dist
