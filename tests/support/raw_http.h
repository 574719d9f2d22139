// RawHttp: a minimal HTTP/1.1 client over a plain socket, for tests that
// need what a library client hides: reading a streamed response piece by
// piece, hanging up in the middle of one, sending half a request and
// stalling, or several requests on one kept-alive connection. Blocking, every
// read bounded (30 s). Not thread-safe per object.
#ifndef KILN_TESTS_SUPPORT_RAW_HTTP_H_
#define KILN_TESTS_SUPPORT_RAW_HTTP_H_

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <map>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace kiln::testing {

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // Names lower-cased.
  std::string body;                            // De-chunked.
};

class RawHttp {
 public:
  // Connects to 127.0.0.1:port and sends the request ("Connection: close");
  // reads nothing yet.
  RawHttp(int port, const std::string& method, const std::string& path,
          const std::string& body = "", const std::map<std::string, std::string>& headers = {})
      : RawHttp(port) {
    connected_ = connected_ && Send(Request(method, path, body, headers, /*keep_alive=*/false));
  }

  // Connects only; send with Send.
  explicit RawHttp(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }

  // The bytes of a request.
  static std::string Request(const std::string& method, const std::string& path,
                             const std::string& body = "",
                             const std::map<std::string, std::string>& headers = {},
                             bool keep_alive = true) {
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if (!keep_alive) req += "Connection: close\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    if (!body.empty() || method == "POST") {
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    }
    return req + "\r\n" + body;
  }

  // Sends raw bytes; false if the connection is broken.
  bool Send(const std::string& bytes) {
    if (fd_ < 0) return false;
    for (size_t sent = 0; sent < bytes.size();) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  RawHttp(const RawHttp&) = delete;
  RawHttp& operator=(const RawHttp&) = delete;
  ~RawHttp() { Close(); }

  bool connected() const { return connected_; }

  // Gives up a read after `timeout` without bytes (as if the server had
  // closed), so that a server that never answers fails a test, not hangs it.
  void SetReadTimeout(std::chrono::milliseconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    if (fd_ >= 0) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  // Reads until `text` has arrived (in the raw bytes) or the server closes;
  // returns whether it arrived.
  bool ReadUntil(const std::string& text) {
    while (raw_.find(text) == std::string::npos) {
      if (!ReadSome()) return false;
    }
    return true;
  }

  // Reads to the end and parses (one response).
  RawResponse Finish() {
    while (ReadSome()) {
    }
    RawResponse r;
    Parse(raw_, r, /*at_end=*/true);
    return r;
  }

  // Reads the next whole response of a kept-alive connection; status 0 if
  // the connection ended first.
  RawResponse Next() {
    RawResponse r;
    size_t used = 0;
    while ((used = Parse(raw_, r, /*at_end=*/false)) == 0) {
      if (!ReadSome()) return RawResponse{};
    }
    raw_.erase(0, used);
    return r;
  }

  // True once the server has closed the connection (reads until then).
  bool ReadToEnd() {
    while (ReadSome()) {
    }
    return closed_by_peer_;
  }

  const std::string& raw() const { return raw_; }

  // Hangs up, as a client that goes away.
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  bool ReadSome() {
    char buf[4096];
    if (fd_ < 0) return false;
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n == 0) closed_by_peer_ = true;
    if (n < 0 && errno == ECONNRESET) closed_by_peer_ = true;
    if (n <= 0) return false;
    raw_.append(buf, static_cast<size_t>(n));
    return true;
  }

  // Parses one response from the front of `raw`; returns the bytes it took,
  // 0 if incomplete (`at_end`: the rest of the bytes are the body).
  static size_t Parse(const std::string& raw, RawResponse& r, bool at_end) {
    const size_t head_end = raw.find("\r\n\r\n");
    if (head_end == std::string::npos) return 0;
    r = RawResponse{};
    const std::string head = raw.substr(0, head_end);
    size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.size() >= 12) r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      const size_t next = head.find("\r\n", line_end + 2);
      const std::string line = head.substr(
          line_end + 2, next == std::string::npos ? std::string::npos : next - line_end - 2);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        const size_t value = line.find_first_not_of(' ', colon + 1);
        r.headers[name] = value == std::string::npos ? "" : line.substr(value);
      }
      line_end = next;
    }
    size_t at = head_end + 4;
    if (r.headers["transfer-encoding"] == "chunked") {
      while (true) {
        const size_t eol = raw.find("\r\n", at);
        if (eol == std::string::npos) return at_end ? raw.size() : 0;
        const size_t n = std::stoul(raw.substr(at, eol - at), nullptr, 16);
        if (n == 0) return eol + 4 <= raw.size() ? eol + 4 : (at_end ? raw.size() : 0);
        if (eol + 2 + n + 2 > raw.size()) return at_end ? raw.size() : 0;
        r.body += raw.substr(eol + 2, n);
        at = eol + 2 + n + 2;
      }
    }
    if (r.headers.count("content-length") != 0) {
      const size_t n = std::stoul(r.headers["content-length"]);
      if (at + n > raw.size()) return at_end ? raw.size() : 0;
      r.body = raw.substr(at, n);
      return at + n;
    }
    if (!at_end) return 0;
    r.body = raw.substr(at);
    return raw.size();
  }

  int fd_ = -1;
  bool connected_ = false;
  bool closed_by_peer_ = false;
  std::string raw_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_RAW_HTTP_H_
