#include "base/http_server.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/execution/context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <sys/socket.h>

#include "base/http_request_parser.h"
#include "base/io_threads.h"
#include "base/log.h"
#include "base/write_now.h"

namespace kiln {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// How long a connection closed after an error reply keeps reading (and
// discarding) what its client still sends, so that the client reads the
// reply instead of a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
// What a watch for a hung-up peer reads at most (a pipelined request's start).
constexpr size_t kWatchBytes = 4096;
// What a connection's sends posted together may gather before a write.
constexpr size_t kCoalesceBytes = 64 << 10;
// Of a Drain's time, the part kept for closing what is left.
constexpr auto kDrainCloseReserve = std::chrono::milliseconds(100);

// Appends `s` without CR and LF: a header value (perhaps echoed from a
// client) cannot end the header early.
void AppendOneLine(std::string& out, const std::string& s) {
  if (s.find_first_of("\r\n") == std::string::npos) {
    out += s;
    return;
  }
  for (char c : s) {
    if (c != '\r' && c != '\n') out += c;
  }
}

// Appends "name: value\r\n".
void AppendField(std::string& out, const std::string& name, const std::string& value) {
  AppendOneLine(out, name);
  out += ": ";
  AppendOneLine(out, value);
  out += "\r\n";
}

HttpReply DefaultErrorReply(const HttpRequest&, int status, const std::string& message) {
  return HttpReply{status, "text/plain; charset=utf-8", message + "\n", {}};
}

class Session;

// What the sessions share: the I/O context, the routes and options, and the
// registry of open connections. Outlives the HttpServer while a responder
// still holds it.
struct Core {
  // `keep_io`: the shared loops (options.shared_io), which the Server keeps,
  // not the Core: a session's queued handler holds the Core, and a Core
  // holding the loops that hold the handler would never be freed.
  Core(HttpServerOptions o, std::vector<HttpRoute> r, std::shared_ptr<IoThreads>& keep_io)
      : options(std::move(o)),
        routes(std::move(r)),
        shared_io(options.shared_io != nullptr),
        owned_io(shared_io ? nullptr : std::make_shared<IoThreads>(options.io_threads)),
        io(shared_io ? options.shared_io.get() : owned_io.get()) {
    keep_io = std::move(options.shared_io);
    if (!options.error_reply) options.error_reply = DefaultErrorReply;
  }

  // Where the listener runs.
  net::io_context& AcceptContext() { return io->context(0); }
  // Where a new connection runs, for its whole life: the loops in turn.
  net::io_context& ConnectionContext() { return io->context(io->NextLoop()); }

  HttpServerOptions options;
  const std::vector<HttpRoute> routes;
  // One thread per loop: a connection's handlers never run concurrently, so
  // they need no strand. Owned here unless shared; shared loops outlive the
  // Server, and a session only runs (or is destroyed) inside them.
  const bool shared_io;
  const std::shared_ptr<IoThreads> owned_io;
  IoThreads* const io;
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};  // The I/O threads are gone: post nothing more.
  std::atomic<int> handling{0};
  std::atomic<uint64_t> next_id{0};

  std::mutex mu;
  std::condition_variable closed;                       // Signalled as sessions close.
  std::map<uint64_t, std::weak_ptr<Session>> sessions;  // Guarded by mu.
};

enum class Phase { kReading, kHandling, kClosed };

class Responder;

// One connection: reads requests one after another, hands each to its
// route, writes the answer. Every member runs on the connection's loop.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(const std::shared_ptr<Core>& core, tcp::socket socket, uint64_t id)
      : core_weak_(core),
        core_keep_(core->shared_io ? core : nullptr),
        core_(*core),
        socket_(std::move(socket)),
        loop_(static_cast<net::io_context&>(
            net::query(socket_.get_executor(), net::execution::context))),
        timer_(socket_.get_executor()),
        id_(id),
        accepted_(Clock::now()) {}

  uint64_t id() const { return id_; }
  net::any_io_executor executor() { return socket_.get_executor(); }
  // True on the thread of the connection's loop.
  bool OnLoop() const { return loop_.get_executor().running_in_this_thread(); }
  // Responders' sends posted to the loop and not run yet (any thread).
  int queued() const { return queued_.load(std::memory_order_acquire); }
  void Queued(int delta) { queued_.fetch_add(delta, std::memory_order_acq_rel); }

  // Reclaimable when reading (not handling) a request; `since`: how long.
  bool Reclaimable(Clock::time_point& since) const {
    since = Clock::time_point(Clock::duration(phase_since_.load()));
    return phase_.load() == Phase::kReading;
  }

  void Start() { StartRequest(); }

  // Drain has begun: an idle connection closes now, the others after their
  // current response.
  void OnDrain() {
    if (phase_ == Phase::kReading && parser_ && !parser_->got_some() && !lingering_) Close();
  }

  void Close() {
    if (phase_ == Phase::kClosed) return;
    if (phase_ == Phase::kHandling) core_.handling--;
    SetPhase(Phase::kClosed);
    error_code ignored;
    timer_.cancel();
    socket_.close(ignored);  // Fails only for a socket already closed.
    pending_.clear();
    CancelResponder();
    std::lock_guard<std::mutex> lock(core_.mu);
    core_.sessions.erase(id_);
    core_.closed.notify_all();
  }

  // From the request's responder (posted to the loop). `seq` names the
  // request; a stale one is ignored.
  void SendReply(uint64_t seq, HttpReply reply);
  void SendStreamHead(uint64_t seq, HttpReply head);
  void SendChunk(uint64_t seq, std::string chunk);
  void SendFinish(uint64_t seq);
  void SendAbort(uint64_t seq);
  // Writes what is pending, unless more of this connection's sends wait in
  // the loop's queue: a producer faster than the loop (kiln-worker serve's
  // engine posting a token per stream per step) then has its chunks go out
  // together, in one write, when the last of them has run. At most
  // kCoalesceBytes wait so, lest a producer that keeps ahead of the loop
  // hold its stream back until the backlog limit closes it.
  void Flush() {
    if (phase_ == Phase::kClosed) return;
    if (queued() > 0 && pending_.size() < kCoalesceBytes) return;
    if (!writing_) WriteSome();
    if (!writing_ && response_done_) AfterResponse();
  }

 private:
  void SetPhase(Phase p) {
    phase_ = p;
    phase_since_ = Clock::now().time_since_epoch().count();
  }

  void StartRequest() {
    if (phase_ == Phase::kClosed) return;
    // A new connection has been reading since its accept, not since its loop
    // got to it: that is what the reclaiming at the limit compares.
    if (!first_) SetPhase(Phase::kReading);
    if (core_.draining && !first_) {
      Close();
      return;
    }
    parser_.emplace();
    http_internal::ConfigureRequestParser(*parser_, core_.options.limits);
    header_started_.reset();
    body_started_.reset();
    idle_since_ = Clock::now();
    ReadSome();
  }

  // The deadline of the next read, by how far the request has come.
  Clock::time_point ReadDeadline() const {
    const HttpLimits& l = core_.options.limits;
    const auto now = Clock::now();
    if (!header_started_) {
      return first_ ? accepted_ + l.header_timeout : idle_since_ + l.keep_alive_timeout;
    }
    if (!body_started_) return *header_started_ + l.header_timeout;
    return std::min(*body_started_ + l.body_timeout, now + l.body_idle_timeout);
  }

  // Closes the connection at `deadline` unless the deadline moves or is
  // cleared first. Lazily, as nginx's and Envoy's timers: the wait is set
  // again only when the deadline comes before the one already set (a
  // request mostly moves it later or clears it), so a request on a kept-alive
  // connection usually costs no timer operation at all; a wait that ends
  // early is set again for what is left.
  void SetDeadline(Clock::time_point deadline) {
    deadline_ = deadline;
    if (deadline >= armed_) return;
    armed_ = deadline;
    timer_.expires_at(deadline);  // A wait set before ends as aborted.
    timer_.async_wait([self = shared_from_this()](error_code ec) { self->OnTimer(ec); });
  }

  void ClearDeadline() { deadline_ = Clock::time_point::max(); }

  void OnTimer(error_code ec) {
    if (ec == net::error::operation_aborted) return;  // Set again earlier, or closed.
    armed_ = Clock::time_point::max();
    if (phase_ == Phase::kClosed || deadline_ == Clock::time_point::max()) return;
    if (deadline_ <= Clock::now()) return Close();
    SetDeadline(deadline_);
  }

  void ReadSome() {
    SetDeadline(ReadDeadline());
    if (watching_) {  // The watch's read is under way: it continues here.
      read_after_watch_ = true;
      return;
    }
    bhttp::async_read_some(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(error_code ec) {
    ClearDeadline();
    if (phase_ == Phase::kClosed) return;
    if (ec == bhttp::error::header_limit) {
      return ErrorReply(431, "request header fields too large: over " +
                                 std::to_string(core_.options.limits.max_header_bytes) + " bytes");
    }
    if (ec == bhttp::error::body_limit) {
      return ErrorReply(413, "request body too large: over " +
                                 std::to_string(core_.options.limits.max_body_bytes) + " bytes");
    }
    if (ec && ec.category() == bhttp::make_error_code(bhttp::error::header_limit).category() &&
        ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
      return ErrorReply(400, "malformed request: " + ec.message());
    }
    if (ec) return Close();  // The peer closed, reset, or timed out.
    if (!header_started_ && parser_->got_some()) header_started_ = Clock::now();
    if (parser_->is_header_done() && !body_started_) {
      body_started_ = Clock::now();
      if (!parser_->is_done() && !continued_ &&
          beast::iequals(parser_->get()[bhttp::field::expect], "100-continue")) {
        continued_ = true;
        return Write("HTTP/1.1 100 Continue\r\n\r\n", /*then_read=*/true);
      }
    }
    if (!parser_->is_done()) return ReadSome();
    continued_ = false;
    Dispatch();
  }

  HttpRequest Parsed() { return parser_ ? http_internal::RequestHead(*parser_) : HttpRequest{}; }

  void Dispatch();

  // A reply of the server's own, then a lingering close.
  void ErrorReply(int status, const std::string& message) {
    HttpRequest partial = Parsed();
    keep_alive_ = false;
    head_only_ = false;
    chunked_ = false;
    linger_after_ = true;
    response_done_ = true;
    Queue(Serialize(core_.options.error_reply(partial, status, message), false));
  }

  // The response head, in one string grown in place.
  std::string Head(const HttpReply& r, bool stream, size_t reserve_body) {
    const auto code = bhttp::int_to_status(static_cast<unsigned>(r.status));
    const auto reason = bhttp::obsolete_reason(code);
    std::string h;
    h.reserve(160 + 48 * (core_.options.default_headers.size() + r.headers.size()) + reserve_body);
    h += "HTTP/1.1 ";
    h += std::to_string(r.status);
    h += ' ';
    h.append(reason.data(), reason.size());
    h += "\r\nContent-Type: ";
    AppendOneLine(h, r.content_type);
    h += "\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n";
    for (const auto& [k, v] : core_.options.default_headers) AppendField(h, k, v);
    for (const auto& [k, v] : r.headers) AppendField(h, k, v);
    if (!stream) {
      h += "Content-Length: ";
      h += std::to_string(r.body.size());
      h += "\r\n";
    } else if (chunked_) {
      h += "Transfer-Encoding: chunked\r\n";
    } else {
      keep_alive_ = false;  // An HTTP/1.0 stream ends with the connection.
    }
    if (core_.draining) keep_alive_ = false;
    h += keep_alive_ ? (http10_ ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n";
    h += "\r\n";
    return h;
  }

  std::string Serialize(const HttpReply& r, bool stream) {
    const bool body = !head_only_ && !r.body.empty();
    std::string out = Head(r, stream, body ? r.body.size() + 24 : 0);
    if (!body) return out;
    if (!stream) return out += r.body;
    return out += Chunk(r.body);
  }

  std::string Chunk(const std::string& data) {
    if (data.empty() || head_only_) return "";
    if (!chunked_) return data;
    char size[20];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::string out;
    out.reserve(static_cast<size_t>(n) + data.size() + 2);
    out.append(size, static_cast<size_t>(n));
    out += data;
    out += "\r\n";
    return out;
  }

  void Queue(std::string bytes) {
    if (phase_ == Phase::kClosed) return;
    if (pending_.empty()) {
      pending_ = std::move(bytes);
    } else {
      pending_ += bytes;
    }
    Flush();
  }

  void WriteSome() {
    if (pending_.empty()) return;
    std::string bytes = std::move(pending_);
    pending_.clear();
    Write(std::move(bytes), /*then_read=*/false);
  }

  // Writes `bytes` at once as far as the socket takes them, as nginx does
  // (a reply or a stream's event mostly fits the send buffer: then no trip
  // through the loop, and a stream's next event is not held behind the
  // last one's completion); the rest as the peer reads, within
  // write_timeout. `then_read`: read on afterwards (a 100 Continue).
  void Write(std::string bytes, bool then_read) {
    error_code failed;
    const size_t written = WriteNow(socket_, net::buffer(bytes), failed);
    if (failed || written == bytes.size()) return OnWrite(failed, then_read);
    writing_ = true;
    sending_ = std::move(bytes);
    sending_.erase(0, written);
    SetDeadline(Clock::now() + core_.options.limits.write_timeout);
    net::async_write(socket_, net::buffer(sending_),
                     [self = shared_from_this(), then_read](error_code ec, size_t) {
                       self->OnWrite(ec, then_read);
                     });
  }

  void OnWrite(error_code ec, bool then_read) {
    ClearDeadline();
    writing_ = false;
    if (phase_ == Phase::kClosed) return;
    if (ec) return Close();
    if (then_read) return ReadSome();
    if (!pending_.empty()) return WriteSome();
    if (response_done_) AfterResponse();
  }

  void AfterResponse() {
    response_done_ = false;
    if (phase_ == Phase::kHandling) core_.handling--;
    responder_.reset();
    SetPhase(Phase::kReading);
    first_ = false;
    if (linger_after_) return Linger();
    if (!keep_alive_ || core_.draining) {
      error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);  // The peer may be gone already.
      return Close();
    }
    StartRequest();
  }

  // Half-closes, then reads and discards until the peer closes or
  // kLingerTime passes.
  void Linger() {
    lingering_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);  // The peer may be gone already.
    SetDeadline(Clock::now() + kLingerTime);
    LingerRead();
  }

  void LingerRead() {
    socket_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (self->phase_ == Phase::kClosed) return;
                              if (ec) return self->Close();
                              self->LingerRead();
                            });
  }

  // Notices a peer that closes or resets while its request is handled, with
  // the read the next request needs anyway (an async_wait would re-arm the
  // descriptor in epoll each time: a syscall a request). Bytes that come
  // meanwhile (the next request, pipelined) are kept for the parser, and the
  // peer is watched no further until the answer is written.
  void WatchPeer() {
    if (watching_ || buffer_.size() > 0) return;
    watching_ = true;
    socket_.async_read_some(
        buffer_.prepare(kWatchBytes),
        [self = shared_from_this()](error_code ec, size_t n) { self->OnWatch(ec, n); });
  }

  void OnWatch(error_code ec, size_t n) {
    watching_ = false;
    if (phase_ == Phase::kClosed) return;
    if (ec) return Close();  // Gone (a half-close counts), before or after the answer.
    buffer_.commit(n);
    if (read_after_watch_) {  // The answer is written: on to the next request.
      read_after_watch_ = false;
      ReadSome();
    }
  }

  void CancelResponder();

  // Not shared: the Core's I/O context holds this session's handlers. With
  // shared threads the context is not the Core's, and a handler of this
  // session may run after the server is gone: then the session keeps it.
  const std::weak_ptr<Core> core_weak_;
  const std::shared_ptr<Core> core_keep_;
  Core& core_;
  tcp::socket socket_;
  net::io_context& loop_;
  std::atomic<int> queued_{0};
  net::steady_timer timer_;
  // The connection's deadline (max: none), and the end of the wait set on
  // timer_ (max: none set).
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point armed_ = Clock::time_point::max();
  const uint64_t id_;
  std::atomic<Phase> phase_{Phase::kReading};
  std::atomic<Clock::rep> phase_since_{Clock::now().time_since_epoch().count()};
  beast::flat_buffer buffer_;
  std::optional<http_internal::RequestParser> parser_;
  const Clock::time_point accepted_;
  Clock::time_point idle_since_;
  std::optional<Clock::time_point> header_started_, body_started_;
  bool first_ = true, continued_ = false, lingering_ = false, watching_ = false,
       read_after_watch_ = false;
  // The response being written.
  uint64_t seq_ = 0;
  // Not owned: the handler holds it, and a responder dropped unanswered
  // replies 500.
  std::weak_ptr<Responder> responder_;
  bool keep_alive_ = true, http10_ = false, head_only_ = false, chunked_ = true;
  bool response_done_ = false, linger_after_ = false, streaming_ = false, writing_ = false;
  std::string pending_, sending_;
  char discard_[4096];
};

class Responder final : public HttpResponder {
 public:
  Responder(std::shared_ptr<Core> core, std::weak_ptr<Session> session, uint64_t seq)
      : core_(std::move(core)), session_(std::move(session)), seq_(seq) {}

  ~Responder() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || core_->stopped) return;
    // Always posted: the last reference may go inside one of the session's
    // own calls.
    if (state_ == State::kNew) {
      HttpRequest none;
      Deliver(lock, /*here=*/false,
              [reply = core_->options.error_reply(none, 500,
                                                  "internal error: the handler gave no reply")](
                  Session& s, uint64_t seq) mutable { s.SendReply(seq, std::move(reply)); });
    } else if (state_ == State::kStreaming) {
      Deliver(lock, /*here=*/false, [](Session& s, uint64_t seq) { s.SendFinish(seq); });
    }
  }

  bool Reply(HttpReply reply) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || state_ != State::kNew) return false;
    state_ = State::kDone;
    return Deliver(lock, true, [reply = std::move(reply)](Session& s, uint64_t seq) mutable {
      s.SendReply(seq, std::move(reply));
    });
  }

  bool StartStream(HttpReply head) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || state_ != State::kNew) return false;
    state_ = State::kStreaming;
    return Deliver(lock, true, [head = std::move(head)](Session& s, uint64_t seq) mutable {
      s.SendStreamHead(seq, std::move(head));
    });
  }

  bool Write(std::string chunk) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || state_ != State::kStreaming) return false;
    return Deliver(lock, true, [chunk = std::move(chunk)](Session& s, uint64_t seq) mutable {
      s.SendChunk(seq, std::move(chunk));
    });
  }

  bool Finish() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || state_ != State::kStreaming) return false;
    state_ = State::kDone;
    return Deliver(lock, true, [](Session& s, uint64_t seq) { s.SendFinish(seq); });
  }

  bool Abort() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || state_ != State::kStreaming) return false;
    state_ = State::kDone;
    return Deliver(lock, true, [](Session& s, uint64_t seq) { s.SendAbort(seq); });
  }

  bool cancelled() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  void OnCancel(std::function<void()> on_cancel) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!cancelled_) {
        on_cancel_ = std::move(on_cancel);
        return;
      }
      if (state_ == State::kDone) return;
    }
    on_cancel();
  }

  // From the session, on its loop.
  void Cancel() {
    std::function<void()> run;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      if (state_ != State::kDone) run = std::move(on_cancel_);
      on_cancel_ = nullptr;
    }
    if (run) run();
  }

  bool answered() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_ == State::kDone;
  }

 private:
  enum class State { kNew, kStreaming, kDone };

  // Runs `send(session, seq)` on the session's loop, in the order of the
  // calls: at once when `here` allows it, the caller is on that loop and
  // nothing of the session's is still queued there (a handler answering on
  // its loop; kiln-router relaying a backend's reply, which comes on the
  // client's loop: a trip through the queue saved), else posted. Called
  // with `lock` (mu_) held; a direct send runs after it is released, as the
  // session may cancel this responder, which takes mu_.
  template <typename Send>
  bool Deliver(std::unique_lock<std::mutex>& lock, bool here, Send send) {
    std::shared_ptr<Session> s = session_.lock();
    if (!s || core_->stopped) {
      cancelled_ = true;
      return false;
    }
    if (here && s->OnLoop() && s->queued() == 0) {
      lock.unlock();
      send(*s, seq_);
      return true;
    }
    s->Queued(+1);
    net::post(s->executor(), [s, seq = seq_, send = std::move(send)]() mutable {
      s->Queued(-1);
      send(*s, seq);
      s->Flush();  // A stale send (another request's) wrote nothing: what waits goes now.
    });
    return true;
  }

  const std::shared_ptr<Core> core_;
  const std::weak_ptr<Session> session_;
  const uint64_t seq_;
  mutable std::mutex mu_;
  State state_ = State::kNew;  // Guarded by mu_, as below.
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
};

void Session::CancelResponder() {
  if (auto r = responder_.lock()) r->Cancel();
}

void Session::SendReply(uint64_t seq, HttpReply reply) {
  if (seq != seq_ || phase_ != Phase::kHandling || streaming_ || response_done_) return;
  response_done_ = true;
  Queue(Serialize(reply, false));
}

void Session::SendStreamHead(uint64_t seq, HttpReply head) {
  if (seq != seq_ || phase_ != Phase::kHandling || streaming_ || response_done_) return;
  streaming_ = true;
  Queue(Serialize(head, true));
}

void Session::SendChunk(uint64_t seq, std::string chunk) {
  if (seq != seq_ || phase_ != Phase::kHandling || !streaming_ || response_done_) return;
  if (pending_.size() + chunk.size() > core_.options.limits.max_stream_backlog) {
    return Close();  // The peer reads slower than the stream comes: cancelled.
  }
  Queue(Chunk(chunk));
}

void Session::SendAbort(uint64_t seq) {
  if (seq != seq_ || phase_ != Phase::kHandling || !streaming_ || response_done_) return;
  response_done_ = true;
  streaming_ = false;
  keep_alive_ = false;  // What was written goes out, then the connection closes.
  Queue("");
}

void Session::SendFinish(uint64_t seq) {
  if (seq != seq_ || phase_ != Phase::kHandling || !streaming_ || response_done_) return;
  response_done_ = true;
  streaming_ = false;
  Queue(chunked_ && !head_only_ ? "0\r\n\r\n" : "");
}

// Finds the route: the longest matching path, then the method.
const HttpRoute* FindRoute(const std::vector<HttpRoute>& routes, const HttpRequest& r,
                           std::string& allow) {
  size_t best_len = 0;
  bool found_path = false;
  std::vector<const HttpRoute*> at_best;
  for (const auto& route : routes) {
    const std::string& p = route.path;
    const bool match =
        r.path == p ||
        (route.match == HttpMatch::kPrefix && r.path.size() > p.size() &&
         r.path.compare(0, p.size(), p) == 0 && (p.back() == '/' || r.path[p.size()] == '/'));
    if (!match) continue;
    if (!found_path || p.size() > best_len) at_best.clear();
    if (!found_path || p.size() >= best_len) {
      at_best.push_back(&route);
      best_len = p.size();
      found_path = true;
    }
  }
  for (const HttpRoute* route : at_best) {
    if (route->method == r.method || (route->method == "GET" && r.method == "HEAD")) return route;
  }
  for (const HttpRoute* route : at_best) {
    allow += (allow.empty() ? "" : ", ") + route->method;
    if (route->method == "GET") allow += ", HEAD";
  }
  return nullptr;
}

void Session::Dispatch() {
  HttpRequest request = Parsed();
  request.body = std::move(parser_->get().body());
  keep_alive_ = parser_->get().keep_alive();
  http10_ = parser_->get().version() < 11;
  chunked_ = !http10_;
  head_only_ = request.method == "HEAD";
  streaming_ = false;
  response_done_ = false;
  linger_after_ = false;
  parser_.reset();
  SetPhase(Phase::kHandling);
  core_.handling++;
  auto responder = std::make_shared<Responder>(core_weak_.lock(),
                                               std::weak_ptr<Session>(shared_from_this()), ++seq_);
  responder_ = responder;
  WatchPeer();
  std::string allow;
  const HttpRoute* route = FindRoute(core_.routes, request, allow);
  if (route == nullptr) {
    HttpReply r = allow.empty()
                      ? core_.options.error_reply(request, 404, "not found: " + request.path)
                      : core_.options.error_reply(request, 405,
                                                  "method " + request.method + " not allowed on " +
                                                      request.path + "; allowed: " + allow);
    if (!allow.empty()) r.headers.emplace_back("Allow", allow);
    responder->Reply(std::move(r));
    return;
  }
  try {
    route->handler(request, responder);
  } catch (const std::exception& e) {
    responder->Reply(
        core_.options.error_reply(request, 500, std::string("internal error: ") + e.what()));
  }
}

class Server final : public HttpServer {
 public:
  Server(std::shared_ptr<IoThreads> shared_io, std::shared_ptr<Core> core, std::string url)
      : shared_io_(std::move(shared_io)),
        core_(std::move(core)),
        url_(std::move(url)),
        acceptor_(core_->AcceptContext()),
        retry_(acceptor_.get_executor()) {}

  ~Server() override { Drain(std::chrono::milliseconds(0)); }

  Status Listen(const tcp::endpoint& endpoint) {
    error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return Status::Unavailable("cannot listen on " + url_ + ": " + ec.message());
    Accept();
    return Status::Ok();
  }

  bool Drain(std::chrono::milliseconds timeout) override {
    std::lock_guard<std::mutex> drain_lock(drain_mu_);
    if (drained_) return drained_all_;
    const auto deadline = Clock::now() + timeout;
    core_->draining = true;
    net::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);  // Nothing to do if it failed: the server is going away.
      retry_.cancel();
    });
    for (auto& s : Sessions()) net::post(s->executor(), [s] { s->OnDrain(); });
    const auto close_at = deadline - std::min(kDrainCloseReserve, timeout / 4);
    {
      std::unique_lock<std::mutex> lock(core_->mu);
      core_->closed.wait_until(lock, close_at, [&] { return core_->sessions.empty(); });
      drained_all_ = core_->sessions.empty();
    }
    // What is left is closed; its responders cancelled.
    for (auto& s : Sessions()) net::post(s->executor(), [s] { s->Close(); });
    {
      std::unique_lock<std::mutex> lock(core_->mu);
      core_->closed.wait_until(lock, deadline, [&] { return core_->sessions.empty(); });
    }
    if (core_->shared_io) {
      // The threads go on for others: the posted closes run there. Nothing
      // posted after this point may reach a session.
      std::unique_lock<std::mutex> lock(core_->mu);
      core_->closed.wait_for(lock, kDrainCloseReserve, [&] { return core_->sessions.empty(); });
      core_->stopped = true;
      drained_ = true;
      return drained_all_;
    }
    core_->stopped = true;
    core_->io->Stop();
    // No thread runs the sessions now: close the stragglers, and the
    // listener if the posted close did not run, here.
    for (auto& s : Sessions()) s->Close();
    error_code ignored;
    acceptor_.close(ignored);  // Nothing to do if it failed: the server is going away.
    // The handlers still queued (the cancelled accept, the sessions' reads
    // and timers) hold the Core, which owns the loops that hold them: run
    // them out, or the Core and its threads' memory are never freed.
    core_->io->RunLeftovers();
    drained_ = true;
    return drained_all_;
  }

  const std::string& url() const override { return url_; }

  HttpServerStats stats() const override {
    HttpServerStats s;
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      s.connections = static_cast<int>(core_->sessions.size());
    }
    s.handling = core_->handling.load();
    s.draining = core_->draining.load();
    return s;
  }

 private:
  std::vector<std::shared_ptr<Session>> Sessions() {
    std::vector<std::shared_ptr<Session>> out;
    std::lock_guard<std::mutex> lock(core_->mu);
    for (auto& [id, weak] : core_->sessions) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }

  void Accept() {
    // The handlers read the Core they keep, not `this`, until they know the
    // server is not draining: with shared threads they may run after it is gone.
    acceptor_.async_accept(core_->ConnectionContext(),
                           [this, core = core_](error_code ec, tcp::socket socket) {
                             if (ec == net::error::operation_aborted || core->draining) return;
                             if (ec) {
                               // Out of file descriptors, most likely: try again shortly.
                               log::Logger("http").Warn("accept failed", {{"error", ec.message()}});
                               retry_.expires_after(std::chrono::milliseconds(50));
                               retry_.async_wait([this, core = core_](error_code e) {
                                 if (!e && !core->draining) Accept();
                               });
                               return;
                             }
                             Admit(std::move(socket));
                             Accept();
                           });
  }

  // Registers the connection, reclaiming one at the limit.
  void Admit(tcp::socket socket) {
    // Small writes (a stream's chunks) go out at once, not after the peer's
    // delayed ACK of the last one.
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);  // Without it: only slower.
    // For writes at once (Session::Write); without it every write is async.
    socket.non_blocking(true, ignored);
    std::shared_ptr<Session> victim;
    const uint64_t id = ++core_->next_id;
    auto session = std::make_shared<Session>(core_, std::move(socket), id);
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      if (static_cast<int>(core_->sessions.size()) >= core_->options.limits.max_connections) {
        Clock::time_point oldest = Clock::time_point::max(), since;
        for (auto& [other_id, weak] : core_->sessions) {
          auto s = weak.lock();
          if (s && s->Reclaimable(since) && since < oldest) {
            oldest = since;
            victim = std::move(s);
          }
        }
        if (!victim) return;  // All busy: the new connection is closed (its socket destroyed).
      }
      core_->sessions[id] = session;
    }
    if (victim) net::post(victim->executor(), [victim] { victim->Close(); });
    net::post(session->executor(), [session] { session->Start(); });
  }

  // The shared loops (when shared), kept while the server is: see Core.
  const std::shared_ptr<IoThreads> shared_io_;
  const std::shared_ptr<Core> core_;
  const std::string url_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;
  std::mutex drain_mu_;
  bool drained_ = false, drained_all_ = false;  // Guarded by drain_mu_.
};

}  // namespace

std::string HttpRequest::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

HttpRoute HttpRoute::Get(std::string path, HttpHandler handler, HttpMatch match) {
  return Async(
      "GET", std::move(path),
      [handler = std::move(handler)](const HttpRequest& r, std::shared_ptr<HttpResponder> out) {
        out->Reply(handler(r));
      },
      match);
}

HttpRoute HttpRoute::Async(std::string method, std::string path, HttpAsyncHandler handler,
                           HttpMatch match) {
  return HttpRoute{std::move(method), std::move(path), match, std::move(handler)};
}

StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("bind address \"" + address +
                                   "\": want host:port, e.g. \":8080\" or \"127.0.0.1:8080\"");
  }
  std::string host = address.substr(0, colon);
  std::string port_text = address.substr(colon + 1);
  int port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) {
      port = -1;
      break;
    }
    port = port * 10 + (c - '0');
  }
  if (port_text.empty() || port <= 0 || port > 65535) {
    return Status::InvalidArgument("bind address \"" + address + "\": port must be 1-65535");
  }
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return Status::InvalidArgument("bind address \"" + address +
                                   "\": put an IPv6 host in brackets, e.g. \"[::1]:8080\"");
  }
  return std::make_pair(host, port);
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                        std::vector<HttpRoute> routes) {
  KILN_ASSIGN_OR_RETURN(auto host_port, ParseBindAddress(options.bind_address));
  const HttpLimits& l = options.limits;
  if (options.io_threads < 1 || l.max_connections < 1 || l.max_header_bytes < 64 ||
      l.header_timeout.count() <= 0 || l.body_idle_timeout.count() <= 0 ||
      l.body_timeout.count() <= 0 || l.keep_alive_timeout.count() <= 0 ||
      l.write_timeout.count() <= 0) {
    return Status::InvalidArgument(
        "HTTP server options: io_threads and max_connections must be at least 1, "
        "max_header_bytes at least 64, and every timeout positive");
  }
  for (const auto& r : routes) {
    if (r.path.empty() || r.path.front() != '/' || !r.handler || r.method.empty()) {
      return Status::InvalidArgument("HTTP route \"" + r.method + " " + r.path +
                                     "\": want a method, a path starting with / and a handler");
    }
  }
  std::string host = host_port.first.empty() ? "0.0.0.0" : host_port.first;
  std::string bare = host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  if (bare == "localhost") bare = "127.0.0.1";
  error_code ec;
  const auto address = net::ip::make_address(bare, ec);
  if (ec) {
    return Status::InvalidArgument("bind address \"" + options.bind_address +
                                   "\": the host must be an IP address or localhost");
  }
  const std::string url = "http://" + host + ":" + std::to_string(host_port.second);
  std::shared_ptr<IoThreads> shared_io;
  auto core = std::make_shared<Core>(std::move(options), std::move(routes), shared_io);
  auto server = std::make_unique<Server>(std::move(shared_io), core, url);
  KILN_RETURN_IF_ERROR(
      server->Listen(tcp::endpoint(address, static_cast<uint16_t>(host_port.second))));
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace kiln
