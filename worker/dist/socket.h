// Socket: the few blocking-with-timeout TCP operations the communicator
// needs, over non-blocking POSIX sockets and poll(2). Timeouts count time
// without progress: a transfer fails only when no byte moved for that long.
// Errors are Unavailable (peer closed or reset, cannot connect) or
// DeadlineExceeded (no progress), both with CommunicationFault.
#ifndef KILN_WORKER_DIST_SOCKET_H_
#define KILN_WORKER_DIST_SOCKET_H_

#include <chrono>
#include <cstddef>
#include <string>

#include "base/statusor.h"

namespace kiln::dist {

using Millis = std::chrono::milliseconds;

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

  // The port this socket is bound to.
  StatusOr<int> LocalPort() const;
  // The numeric address of the connected peer (IPv4-mapped IPv6 unwrapped).
  StatusOr<std::string> PeerHost() const;

 private:
  int fd_ = -1;
};

// Listens on every interface (IPv6 dual-stack where available, else IPv4) on
// `port`; 0 picks a free one. Unavailable when the port cannot be bound.
StatusOr<Socket> Listen(int port);

// Accepts one connection within `timeout`.
StatusOr<Socket> Accept(const Socket& listener, Millis timeout);

// Connects to host:port, retrying refused connections and unresolvable names
// (a peer not up yet) until `timeout` has passed.
StatusOr<Socket> Connect(const std::string& host, int port, Millis timeout);

// Send or receive exactly `n` bytes. `who` names the peer in errors.
Status SendAll(const Socket& s, const void* data, size_t n, Millis timeout, const std::string& who);
Status RecvAll(const Socket& s, void* data, size_t n, Millis timeout, const std::string& who);

// Sends `send_n` bytes on `out` while receiving `recv_n` bytes on `in`, so two
// neighbours exchanging large buffers cannot deadlock on full socket buffers.
Status SendRecv(const Socket& out, const void* send_data, size_t send_n, const std::string& out_who,
                const Socket& in, void* recv_data, size_t recv_n, const std::string& in_who,
                Millis timeout);

// Length-prefixed (4 bytes, little-endian) messages for the rendezvous.
Status SendMessage(const Socket& s, const std::string& message, Millis timeout,
                   const std::string& who);
StatusOr<std::string> RecvMessage(const Socket& s, Millis timeout, const std::string& who);

}  // namespace kiln::dist

#endif  // KILN_WORKER_DIST_SOCKET_H_
