// http_load: a closed-loop HTTP/1.1 load generator for the router benchmark
// (router_bench.sh). --connections keep-alive connections to 127.0.0.1:PORT,
// spread over --threads threads that each run one epoll loop (no thread per
// connection), send POST /v1/completions with a small JSON body, each the
// moment its previous answer has been read, until --requests have been sent
// or --duration has passed; then the requests in flight finish (or time out)
// and it prints one JSON line:
//
//   {"connections": 64, "stream": false, "requests": 52113, "ok": 52113, "errors": 0,
//    "seconds": 5.00, "rps": 10422.1, "latencyP50Us": 6012, "latencyP99Us": 9120, ...}
//
// Latency runs from the request's first byte written (its connect, on a new
// connection) to its response's last byte read. With --stream the body asks
// for "stream": true, the response must be an SSE stream that ends with
// "data: [DONE]", and TTFT is the time to the first "data:" of the (de-chunked)
// body. Responses may have a Content-Length, a chunked body or run to the end
// of the connection; "Connection: close" is honoured by reconnecting.
//
// An error is a status other than 200, a response cut short or malformed, a
// stream without [DONE], a failed connect or a request past --timeout; the
// connection is then closed and the next request opens a new one. The output
// counts errors by kind, responses by status and by the x-kiln-backend header
// (which backend answered; kiln-worker serve's x-kiln-model-version else). Exit status: 0 when
// every request succeeded, 1 otherwise, 2 for bad usage.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nlohmann/json.hpp>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "base/flags.h"

namespace {

using Clock = std::chrono::steady_clock;

// An incremental parser of one HTTP/1.1 response at a time: the head, then a
// body framed by Content-Length, by chunked transfer-encoding or by the end
// of the connection. Optionally watches the de-chunked body for SSE events.
class ResponseParser {
 public:
  enum class Result { kMore, kDone, kError };

  explicit ResponseParser(bool watch_events) : watch_events_(watch_events) {}

  // Ready for the next response on the connection.
  void Reset() { *this = ResponseParser(watch_events_); }

  // Consumes up to `n` bytes; `*used` says how many. kDone when the response
  // is complete (bytes past it are left unused), kError with error() set.
  Result Feed(const char* data, size_t n, size_t* used) {
    size_t i = 0;
    Result r = Result::kMore;
    while (i < n && r == Result::kMore) r = Step(data, n, &i);
    if (r == Result::kMore && state_ == State::kDone) r = Result::kDone;
    *used = i;
    return r;
  }

  // The peer closed the connection: kDone for a body that runs to the end,
  // kError for anything cut short.
  Result Eof() {
    if (state_ == State::kToEof) {
      state_ = State::kDone;
      return Result::kDone;
    }
    return Fail("connection closed mid-response");
  }

  bool started() const { return started_; }
  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  const std::string& backend() const { return backend_; }
  bool saw_event() const { return saw_event_; }
  bool saw_done() const { return saw_done_; }
  const std::string& error() const { return error_; }

 private:
  enum class State { kHead, kLength, kChunkSize, kChunkData, kChunkEnd, kTrailers, kToEof, kDone };
  static constexpr size_t kMaxHead = 64 << 10, kMaxLine = 4 << 10;

  Result Fail(std::string why) {
    error_ = std::move(why);
    return Result::kError;
  }

  // One step of the state machine from data[*i]; advances *i.
  Result Step(const char* data, size_t n, size_t* i) {
    started_ = true;
    switch (state_) {
      case State::kHead: {
        const size_t from = head_.size() < 3 ? 0 : head_.size() - 3;
        const size_t take = std::min(n - *i, kMaxHead + 4 - head_.size());
        head_.append(data + *i, take);
        const size_t end = head_.find("\r\n\r\n", from);
        if (end == std::string::npos) {
          *i += take;
          return head_.size() > kMaxHead ? Fail("response head over 64 KiB") : Result::kMore;
        }
        *i += take - (head_.size() - (end + 4));
        head_.resize(end + 4);
        return ParseHead();
      }
      case State::kLength: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - *i));
        Body(data + *i, take);
        *i += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kDone;
        return Result::kMore;
      }
      case State::kChunkSize:
      case State::kTrailers: {
        std::string_view line;
        if (!Line(data, n, i, &line)) return CheckLineSize();
        if (state_ == State::kTrailers) {
          if (line.empty()) state_ = State::kDone;
          return Result::kMore;
        }
        return ParseChunkSize(line);
      }
      case State::kChunkData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - *i));
        Body(data + *i, take);
        *i += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kChunkEnd;
        return Result::kMore;
      }
      case State::kChunkEnd: {
        std::string_view line;
        if (!Line(data, n, i, &line)) return CheckLineSize();
        if (!line.empty()) return Fail("chunk data longer than its size");
        state_ = State::kChunkSize;
        return Result::kMore;
      }
      case State::kToEof:
        Body(data + *i, n - *i);
        *i = n;
        return Result::kMore;
      case State::kDone:
        return Result::kDone;
    }
    return Fail("unreachable parser state");
  }

  // Gathers a CRLF-terminated line into line_; true with `*line` (without the
  // CRLF) once it is whole.
  bool Line(const char* data, size_t n, size_t* i, std::string_view* line) {
    if (!partial_line_) line_.clear();
    const char* nl = static_cast<const char*>(std::memchr(data + *i, '\n', n - *i));
    const size_t take = nl ? static_cast<size_t>(nl - (data + *i)) + 1 : n - *i;
    line_.append(data + *i, take);
    *i += take;
    partial_line_ = nl == nullptr;  // The line goes on in the next read.
    if (partial_line_) return false;
    std::string_view v(line_);
    v.remove_suffix(1);
    if (!v.empty() && v.back() == '\r') v.remove_suffix(1);
    *line = v;
    return true;
  }

  Result CheckLineSize() {
    return line_.size() > kMaxLine ? Fail("chunk line over 4 KiB") : Result::kMore;
  }

  Result ParseHead() {
    // "HTTP/1.1 200 OK"
    if (head_.compare(0, 7, "HTTP/1.") != 0 || head_.size() < 12 || head_[8] != ' ') {
      return Fail("not an HTTP/1.x status line");
    }
    const bool http10 = head_[7] == '0';
    status_ = 0;
    for (size_t k = 9; k < 12; ++k) {
      if (head_[k] < '0' || head_[k] > '9') return Fail("bad status code");
      status_ = status_ * 10 + (head_[k] - '0');
    }
    bool chunked = false, has_length = false;
    std::string connection;
    size_t at = head_.find("\r\n") + 2;
    while (at < head_.size() - 2) {
      const size_t eol = head_.find("\r\n", at);
      std::string_view field(head_.data() + at, eol - at);
      at = eol + 2;
      const size_t colon = field.find(':');
      if (colon == std::string_view::npos) return Fail("header field without ':'");
      std::string name(field.substr(0, colon));
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      std::string_view value = field.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
      std::string lower(value);
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (name == "content-length") {
        uint64_t length = 0;
        if (lower.empty()) return Fail("empty Content-Length");
        for (char c : lower) {
          if (c < '0' || c > '9' || length > (uint64_t{1} << 40)) return Fail("bad Content-Length");
          length = length * 10 + static_cast<uint64_t>(c - '0');
        }
        if (has_length && length != remaining_) return Fail("conflicting Content-Length fields");
        has_length = true;
        remaining_ = length;
      } else if (name == "transfer-encoding") {
        chunked = lower.size() >= 7 && lower.compare(lower.size() - 7, 7, "chunked") == 0;
        if (!chunked) return Fail("transfer-encoding without chunked last");
      } else if (name == "connection") {
        connection = lower;
      } else if (name == "x-kiln-backend") {
        backend_ = std::string(value);
      } else if (name == "x-kiln-model-version" && backend_.empty()) {
        backend_ = std::string(value);  // kiln-worker serve names its version.
      }
    }
    keep_alive_ = http10 ? connection.find("keep-alive") != std::string::npos
                         : connection.find("close") == std::string::npos;
    if (status_ >= 100 && status_ < 200) {  // Interim (100 Continue): the real answer follows.
      const bool watch = watch_events_;
      *this = ResponseParser(watch);
      return Result::kMore;
    }
    if (status_ == 204 || status_ == 304) {
      state_ = State::kDone;
    } else if (chunked) {
      state_ = State::kChunkSize;
    } else if (has_length) {
      state_ = remaining_ == 0 ? State::kDone : State::kLength;
    } else {
      state_ = State::kToEof;
      keep_alive_ = false;
    }
    return Result::kMore;
  }

  Result ParseChunkSize(std::string_view line) {
    uint64_t size = 0;
    size_t k = 0;
    for (; k < line.size(); ++k) {
      const char c = line[k];
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        break;
      }
      if (size > (uint64_t{1} << 40)) return Fail("chunk size too large");
      size = size * 16 + static_cast<uint64_t>(digit);
    }
    if (k == 0 || (k < line.size() && line[k] != ';' && line[k] != ' ' && line[k] != '\t')) {
      return Fail("bad chunk size line");
    }
    remaining_ = size;
    state_ = size == 0 ? State::kTrailers : State::kChunkData;
    return Result::kMore;
  }

  // Body bytes, de-chunked: looks for the first "data:" and "data: [DONE]"
  // across read boundaries by keeping the last few bytes.
  void Body(const char* data, size_t n) {
    if (!watch_events_ || n == 0 || saw_done_) return;
    static constexpr std::string_view kEvent = "data:", kDone = "data: [DONE]";
    window_.append(data, n);
    if (!saw_event_ && window_.find(kEvent) != std::string::npos) saw_event_ = true;
    if (window_.find(kDone) != std::string::npos) saw_done_ = true;
    if (window_.size() > kDone.size()) window_.erase(0, window_.size() - (kDone.size() - 1));
  }

  bool watch_events_;
  State state_ = State::kHead;
  bool started_ = false;
  std::string head_, line_, window_;
  bool partial_line_ = false;  // line_ holds the start of a line.
  uint64_t remaining_ = 0;
  int status_ = 0;
  bool keep_alive_ = true;
  std::string backend_;
  bool saw_event_ = false, saw_done_ = false;
  std::string error_;
};

struct Options {
  int port = 0;
  int connections = 1;
  int threads = 1;
  int64_t requests = 1000000;
  std::chrono::milliseconds duration{5000};
  std::chrono::milliseconds timeout{10000};
  bool stream = false;
  std::string model = "chat", path = "/v1/completions";
};

// What the threads share: the request budget and the clock's bounds.
struct Budget {
  std::atomic<int64_t> issued{0};
  int64_t requests = 0;
  Clock::time_point deadline;
};

struct Results {
  std::vector<int64_t> latency_ns, ttft_ns;
  std::map<std::string, int64_t> errors, statuses, backends;
  int64_t requests = 0, ok = 0, connects = 0;
  Clock::time_point last_done{};

  void Merge(Results& o) {
    latency_ns.insert(latency_ns.end(), o.latency_ns.begin(), o.latency_ns.end());
    ttft_ns.insert(ttft_ns.end(), o.ttft_ns.begin(), o.ttft_ns.end());
    for (auto& [k, v] : o.errors) errors[k] += v;
    for (auto& [k, v] : o.statuses) statuses[k] += v;
    for (auto& [k, v] : o.backends) backends[k] += v;
    requests += o.requests;
    ok += o.ok;
    connects += o.connects;
    last_done = std::max(last_done, o.last_done);
  }
};

// One thread's connections and its epoll loop.
class Worker {
 public:
  Worker(const Options& options, Budget& budget, int connections, const sockaddr_in& target)
      : options_(options), budget_(budget), target_(target) {
    const std::string body = "{\"model\": \"" + options.model +
                             "\", \"prompt\": \"Say hello to the router.\", \"max_tokens\": 16" +
                             (options.stream ? ", \"stream\": true}" : "}");
    request_ =
        "POST " + options.path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(options.port) +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body;
    conns_.reserve(static_cast<size_t>(connections));
    for (int c = 0; c < connections; ++c) conns_.emplace_back(options.stream);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    for (auto& c : conns_) Close(c);
    if (epoll_ >= 0) close(epoll_);
  }

  // Runs until every connection has run out of budget or time.
  void Run() {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
      std::perror("http_load: epoll_create1");
      return;
    }
    active_ = static_cast<int>(conns_.size());
    for (auto& c : conns_) Next(c);
    std::vector<epoll_event> events(conns_.size() + 1);
    std::vector<char> buf(64 << 10);
    auto next_scan = Clock::now();
    while (active_ > 0) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 20);
      if (n < 0 && errno != EINTR) {
        std::perror("http_load: epoll_wait");
        return;
      }
      for (int e = 0; e < n; ++e) {
        Conn& c = conns_[events[static_cast<size_t>(e)].data.u64];
        if (c.state == State::kConnecting) {
          Connected(c);
        } else if (c.state == State::kWriting) {
          Write(c);
        } else if (c.state == State::kReading) {
          Read(c, buf);
        }
      }
      const auto now = Clock::now();
      if (backing_off_ > 0 || now >= next_scan) {  // Timeouts every 20 ms; retries at once.
        if (now >= next_scan) next_scan = now + std::chrono::milliseconds(20);
        for (auto& c : conns_) {
          if (c.state == State::kBackoff && now >= c.retry_at) {
            --backing_off_;
            c.state = State::kIdle;
            Next(c);
          } else if ((c.state == State::kConnecting || c.state == State::kWriting ||
                      c.state == State::kReading) &&
                     now - c.started > options_.timeout) {
            Fail(c, "timeout");
          }
        }
      }
    }
  }

  Results& results() { return results_; }

 private:
  enum class State { kIdle, kBackoff, kConnecting, kWriting, kReading, kFinished };
  struct Conn {
    explicit Conn(bool stream) : parser(stream) {}
    int fd = -1;
    State state = State::kIdle;
    size_t written = 0;
    bool reused = false;   // A response was read on this fd before.
    int64_t ttft_ns = -1;  // Time to the first SSE event, once seen.
    Clock::time_point started, retry_at;
    ResponseParser parser;
  };

  // Starts the connection's next request, or retires it when the budget or
  // the time is spent.
  void Next(Conn& c) {
    const auto now = Clock::now();
    if (now >= budget_.deadline || budget_.issued.fetch_add(1) >= budget_.requests) {
      Close(c);
      c.state = State::kFinished;
      --active_;
      return;
    }
    c.started = now;
    c.written = 0;
    c.ttft_ns = -1;
    c.parser.Reset();
    if (c.fd >= 0) {
      c.state = State::kWriting;
      Write(c);
      return;
    }
    c.reused = false;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return Fail(c, "connect");
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ++results_.connects;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = static_cast<uint64_t>(&c - conns_.data());
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev) != 0) return Fail(c, "connect");
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&target_), sizeof target_) == 0) {
      c.state = State::kWriting;
      Write(c);
    } else if (errno == EINPROGRESS) {
      c.state = State::kConnecting;
    } else {
      Fail(c, "connect");
    }
  }

  void Connected(Conn& c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      return Fail(c, "connect");
    }
    c.state = State::kWriting;
    Write(c);
  }

  void Write(Conn& c) {
    while (c.written < request_.size()) {
      const ssize_t n =
          send(c.fd, request_.data() + c.written, request_.size() - c.written, MSG_NOSIGNAL);
      if (n < 0 && errno == EAGAIN) return Watch(c, EPOLLOUT);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Fail(c, c.reused ? "closed" : "broken");
      c.written += static_cast<size_t>(n);
    }
    c.state = State::kReading;
    Watch(c, EPOLLIN | EPOLLRDHUP);
  }

  void Watch(Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = static_cast<uint64_t>(&c - conns_.data());
    if (epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev) != 0) Fail(c, "broken");
  }

  void Read(Conn& c, std::vector<char>& buf) {
    while (true) {
      const ssize_t n = recv(c.fd, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EAGAIN) return;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Fail(c, c.reused && !c.parser.started() ? "closed" : "broken");
      if (n == 0) {
        // A kept-alive connection the server closed before answering is the
        // keep-alive race a real client retries; counted apart.
        if (!c.parser.started()) return Fail(c, c.reused ? "closed" : "broken");
        if (c.parser.Eof() != ResponseParser::Result::kDone) return Fail(c, "broken");
        Close(c);
        return Done(c);
      }
      size_t used = 0;
      const auto r = c.parser.Feed(buf.data(), static_cast<size_t>(n), &used);
      if (c.parser.saw_event() && c.ttft_ns < 0) c.ttft_ns = Nanos(c.started);
      if (r == ResponseParser::Result::kError) return Fail(c, "broken");
      if (r == ResponseParser::Result::kDone) {
        if (used != static_cast<size_t>(n)) return Fail(c, "broken");  // Bytes nobody asked for.
        if (!c.parser.keep_alive()) Close(c);
        return Done(c);
      }
    }
  }

  // A whole response was read.
  void Done(Conn& c) {
    const int64_t ns = Nanos(c.started);
    results_.last_done = Clock::now();
    ++results_.requests;
    ++results_.statuses[std::to_string(c.parser.status())];
    if (!c.parser.backend().empty()) ++results_.backends[c.parser.backend()];
    if (c.parser.status() != 200) {
      ++results_.errors["status"];
    } else if (options_.stream && !c.parser.saw_done()) {
      ++results_.errors["noDone"];
    } else {
      ++results_.ok;
      results_.latency_ns.push_back(ns);
      if (c.ttft_ns >= 0) results_.ttft_ns.push_back(c.ttft_ns);
    }
    c.reused = true;
    c.state = State::kIdle;
    Next(c);
  }

  // The request failed: counted, the connection closed. The next request
  // starts from the event loop (not from here, which may be deep in a
  // retry), 10 ms later after a failed connect so a dead server is not spun on.
  void Fail(Conn& c, const char* kind) {
    ++results_.requests;
    ++results_.errors[kind];
    results_.last_done = Clock::now();
    Close(c);
    c.state = State::kBackoff;
    c.retry_at = results_.last_done;
    if (std::strcmp(kind, "connect") == 0) c.retry_at += std::chrono::milliseconds(10);
    ++backing_off_;
  }

  void Close(Conn& c) {
    if (c.fd < 0) return;
    close(c.fd);  // Also leaves the epoll set.
    c.fd = -1;
  }

  static int64_t Nanos(Clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
  }

  const Options& options_;
  Budget& budget_;
  const sockaddr_in target_;
  std::string request_;
  std::vector<Conn> conns_;
  int epoll_ = -1;
  int active_ = 0;       // Connections not yet finished.
  int backing_off_ = 0;  // Connections waiting to retry.
  Results results_;
};

// Nearest-rank percentile in microseconds; 0 for no samples.
double PercentileUs(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(p * static_cast<double>(v.size()) + 0.999999);
  return static_cast<double>(v[std::clamp<size_t>(rank, 1, v.size()) - 1]) / 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  kiln::FlagSet flags("http_load",
                      "Usage: http_load --port N [flags]\n"
                      "A closed-loop HTTP/1.1 load generator: keep-alive connections to\n"
                      "127.0.0.1:PORT post completions back to back; prints one JSON line.");
  flags.Int("port", &o.port, 1, 65535, "The port on 127.0.0.1.");
  flags.Int("connections", &o.connections, 1, 10000, "Concurrent clients, one connection each.");
  flags.Int("threads", &o.threads, 1, 64, "Threads, each an epoll loop over its connections.");
  flags.Int<int64_t>("requests", &o.requests, 1, int64_t{1} << 40, "Requests to send at most.");
  flags.Duration("duration", &o.duration, std::chrono::milliseconds(1),
                 "Time to send requests in; those in flight then finish.");
  flags.Duration("timeout", &o.timeout, std::chrono::milliseconds(1),
                 "A request's limit, from its start to its last byte.");
  flags.Bool("stream", &o.stream, "Ask for an SSE stream and time its first event (TTFT).");
  flags.String("model", &o.model, "The body's \"model\".");
  flags.String("path", &o.path, "The request path.");
  if (auto code = flags.ParseOrExit(argc, argv, 1)) return *code;
  if (!flags.IsSet("port")) return flags.UsageError("--port is required");

  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_port = htons(static_cast<uint16_t>(o.port));
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Budget budget;
  budget.requests = o.requests;
  const int threads = std::min(o.threads, o.connections);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < threads; ++t) {
    const int share = o.connections / threads + (t < o.connections % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(o, budget, share, target));
  }
  const auto start = Clock::now();
  budget.deadline = start + o.duration;
  std::vector<std::thread> running;
  for (auto& w : workers) running.emplace_back([&w] { w->Run(); });
  for (auto& t : running) t.join();

  Results all;
  for (auto& w : workers) all.Merge(w->results());
  const double seconds =
      std::chrono::duration<double>(std::max(all.last_done, start) - start).count();
  int64_t errors = 0;
  for (auto& [kind, count] : all.errors) errors += count;
  nlohmann::ordered_json line = {
      {"connections", o.connections},
      {"stream", o.stream},
      {"requests", all.requests},
      {"ok", all.ok},
      {"errors", errors},
      {"seconds", std::round(seconds * 1000) / 1000},
      {"rps", seconds > 0 ? std::round(static_cast<double>(all.ok) / seconds * 10) / 10 : 0.0},
      {"latencyP50Us", std::llround(PercentileUs(all.latency_ns, 0.50))},
      {"latencyP99Us", std::llround(PercentileUs(all.latency_ns, 0.99))},
      {"latencyMaxUs", std::llround(PercentileUs(all.latency_ns, 1.0))},
      {"ttftP50Us", std::llround(PercentileUs(all.ttft_ns, 0.50))},
      {"ttftP99Us", std::llround(PercentileUs(all.ttft_ns, 0.99))},
      {"connects", all.connects},
      {"errorKinds", all.errors},
      {"statuses", all.statuses},
      {"backends", all.backends}};
  std::printf("%s\n", line.dump().c_str());
  return errors == 0 && all.ok > 0 ? 0 : 1;
}
