// RawHttp: a minimal HTTP/1.1 client over a plain socket, for tests that
// need what a library client hides: reading a streamed response piece by
// piece, or hanging up in the middle of one. Blocking; one request per
// connection ("Connection: close"). Not thread-safe per object.
#ifndef KILN_TESTS_SUPPORT_RAW_HTTP_H_
#define KILN_TESTS_SUPPORT_RAW_HTTP_H_

#include <unistd.h>

#include <algorithm>
#include <cctype>
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
  // Connects to 127.0.0.1:port and sends the request; reads nothing yet.
  RawHttp(int port, const std::string& method, const std::string& path,
          const std::string& body = "", const std::map<std::string, std::string>& headers = {}) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
    if (!body.empty() || method == "POST") {
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    }
    req += "\r\n" + body;
    for (size_t sent = 0; sent < req.size();) {
      ssize_t n = send(fd_, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
    connected_ = true;
  }
  RawHttp(const RawHttp&) = delete;
  RawHttp& operator=(const RawHttp&) = delete;
  ~RawHttp() { Close(); }

  bool connected() const { return connected_; }

  // Reads until `text` has arrived (in the raw bytes) or the server closes;
  // returns whether it arrived.
  bool ReadUntil(const std::string& text) {
    while (raw_.find(text) == std::string::npos) {
      if (!ReadSome()) return false;
    }
    return true;
  }

  // Reads to the end and parses.
  RawResponse Finish() {
    while (ReadSome()) {
    }
    RawResponse r;
    const size_t head_end = raw_.find("\r\n\r\n");
    if (head_end == std::string::npos) return r;
    const std::string head = raw_.substr(0, head_end);
    std::string rest = raw_.substr(head_end + 4);
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
        r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
      }
      line_end = next;
    }
    if (r.headers["transfer-encoding"] == "chunked") {
      size_t at = 0;
      while (at < rest.size()) {
        const size_t eol = rest.find("\r\n", at);
        if (eol == std::string::npos) break;
        const size_t n = std::stoul(rest.substr(at, eol - at), nullptr, 16);
        if (n == 0) break;
        r.body += rest.substr(eol + 2, n);
        at = eol + 2 + n + 2;
      }
    } else {
      r.body = rest;
    }
    return r;
  }

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
    if (n <= 0) return false;
    raw_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string raw_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_RAW_HTTP_H_
