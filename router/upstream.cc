#include "router/upstream.h"

#include <array>
#include <limits>
#include <optional>
#include <utility>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "base/write_now.h"

namespace kiln::router {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

// What a read of the response body asks the socket for at most.
constexpr size_t kReadBytes = 16 << 10;

const char* UpstreamErrorName(UpstreamError error) {
  switch (error) {
    case UpstreamError::kNone:
      return "none";
    case UpstreamError::kConnect:
      return "connect";
    case UpstreamError::kTimeout:
      return "timeout";
    case UpstreamError::kReset:
      return "reset";
    case UpstreamError::kProtocol:
      return "protocol";
    case UpstreamError::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {

// ASCII only, as HTTP's field names are (libc's tolower is a call per
// character and depends on the locale).
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// A parse error of Beast's (a malformed response), not a transport one.
bool ParseError(const boost::system::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message &&
         ec != bhttp::error::need_buffer;
}

bool HopByHop(std::string_view name) {
  static constexpr std::array<std::string_view, 8> kHop = {
      "connection", "keep-alive", "proxy-connection",  "te",
      "trailer",    "upgrade",    "transfer-encoding", "content-length"};
  for (std::string_view h : kHop) {
    if (IEquals(name, h)) return true;
  }
  return false;
}

std::string Serialize(const UpstreamRequest& r) {
  std::string out;
  out.reserve(r.target.size() + r.body.size() + 64 * (r.headers.size() + 2));
  out += r.method;
  out += ' ';
  out += r.target;
  out += " HTTP/1.1\r\n";
  for (const auto& [name, value] : r.headers) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (!r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH") {
    out += "Content-Length: ";
    out += std::to_string(r.body.size());
    out += "\r\n";
  }
  out += "\r\n";
  out += r.body;
  return out;
}

}  // namespace

class Upstream::Impl {
 public:
  explicit Impl(UpstreamOptions options)
      : options_(std::move(options)),
        io_(options_.shared_io ? options_.shared_io
                               : std::make_shared<IoThreads>(options_.io_threads)) {}
  ~Impl() {
    // Pooled connections go while their context lives; with threads of our
    // own, so do the calls still open (their handlers are dropped unrun).
    registry_.CloseIdle();
    if (!options_.shared_io) io_->Stop();
  }

  const UpstreamOptions options_;
  const std::shared_ptr<IoThreads> io_;
  EndpointRegistry registry_;
};

namespace {

class Call final : public UpstreamCall, public std::enable_shared_from_this<Call> {
 public:
  Call(Upstream::Impl& up, std::shared_ptr<Endpoint> endpoint,
       std::shared_ptr<const UpstreamRequest> request, std::shared_ptr<UpstreamHandler> handler)
      : up_(up),
        loop_(up.io_->PickLoop()),
        executor_(up.io_->context(loop_).get_executor()),
        timer_(executor_),
        endpoint_(std::move(endpoint)),
        wire_(Serialize(*request)),
        head_only_(request->method == "HEAD"),
        handler_(std::move(handler)) {
    endpoint_->outstanding.fetch_add(1, std::memory_order_relaxed);
  }

  // On the call's own loop (kiln-router sends from the client's loop) the
  // call begins at once; from elsewhere it is posted there.
  void Start() {
    if (up_.io_->CurrentLoop() == loop_) return Begin();
    net::post(executor_, [self = shared_from_this()] { self->Begin(); });
  }

  void Cancel() override {
    net::post(executor_, [self = shared_from_this()] {
      self->Fail(UpstreamError::kCancelled, "cancelled", /*may_retry=*/false);
    });
  }

 private:
  void Begin() {
    if (done_) return;
    socket_ = endpoint_->TakeIdle(loop_, up_.options_.pool_idle);
    if (socket_) {
      reused_ = true;
      Write();
      return;
    }
    Connect();
  }

  void Connect() {
    reused_ = false;
    socket_ = std::make_unique<tcp::socket>(up_.io_->context(loop_));
    Arm(up_.options_.connect_timeout, UpstreamError::kConnect, "connect timed out");
    socket_->async_connect(
        endpoint_->resolved(),
        net::bind_executor(executor_, [self = shared_from_this()](error_code ec) {
          if (self->done_) return;
          if (ec) {
            self->Fail(UpstreamError::kConnect, "connect: " + ec.message(), false);
            return;
          }
          error_code ignored;
          self->socket_->set_option(tcp::no_delay(true), ignored);
          self->socket_->non_blocking(true, ignored);  // For Write's write at once.
          self->Write();
        }));
  }

  void Write() {
    // One deadline for sending the request and receiving the response head.
    Arm(up_.options_.response_timeout, UpstreamError::kTimeout, "no response in time");
    // At once as far as the socket takes it (a request mostly fits the send
    // buffer: no trip through the loop), the rest as the backend reads.
    error_code failed;
    const size_t written = WriteNow(*socket_, net::buffer(wire_), failed);
    if (failed) {
      Fail(UpstreamError::kReset, "sending the request: " + failed.message(), true);
      return;
    }
    if (written == wire_.size()) {
      ReadHead();
      return;
    }
    net::async_write(
        *socket_, net::buffer(wire_) + written,
        net::bind_executor(executor_, [self = shared_from_this()](error_code ec, size_t) {
          if (self->done_) return;
          if (ec) {
            self->Fail(UpstreamError::kReset, "sending the request: " + ec.message(), true);
            return;
          }
          self->ReadHead();
        }));
  }

  void ReadHead() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(up_.options_.max_response_header_bytes));
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    parser_->eager(true);  // Every chunk in the buffer at once (ReadBody).
    if (head_only_) parser_->skip(true);
    bhttp::async_read_header(
        *socket_, buffer_, *parser_,
        net::bind_executor(executor_, [self = shared_from_this()](error_code ec, size_t n) {
          if (self->done_) return;
          if (ec) {
            if (ParseError(ec)) {
              self->FailMalformed(ec);
              return;
            }
            const bool nothing = n == 0 && self->buffer_.size() == 0;
            self->Fail(UpstreamError::kReset, "reading the response: " + ec.message(), nothing);
            return;
          }
          self->DeliverHead();
        }));
  }

  void DeliverHead() {
    got_response_ = true;
    auto& msg = parser_->get();
    UpstreamHead head;
    head.status = static_cast<int>(msg.result_int());
    for (const auto& field : msg) {
      const std::string_view name(field.name_string().data(), field.name_string().size());
      const std::string_view value(field.value().data(), field.value().size());
      if (IEquals(name, "content-type")) {
        head.content_type = std::string(value);
        continue;
      }
      if (IEquals(name, "x-kiln-queue-depth")) {
        int depth = 0;
        for (char c : value) {
          if (c < '0' || c > '9') break;
          depth = depth * 10 + (c - '0');
          if (depth > 1 << 20) break;
        }
        endpoint_->reported_queue_depth.store(depth, std::memory_order_relaxed);
      }
      if (HopByHop(name)) continue;
      head.headers.emplace_back(std::string(name), std::string(value));
    }
    if (auto len = parser_->content_length()) {
      head.has_length = true;
      head.length = *len;
    }
    // The body that came with the head goes with it (a stream's head and
    // first event leave the router in one write).
    const error_code ec = ParseBuffered();
    head.first_body = std::exchange(parser_->get().body(), std::string());
    handler_->OnHead(std::move(head));
    if (ec) return FailMalformed(ec);
    ReadBody();
  }

  // Parses what is buffered here and now (the rest of a reply mostly comes
  // with its head, and a stream's events often come several together), hands
  // on the body parsed, and reads from the socket only when it must wait.
  void ReadBody() {
    if (const error_code ec = ParseBuffered()) return FailMalformed(ec);
    HandOn();
    if (parser_->is_done()) {
      Finish();
      return;
    }
    Arm(up_.options_.idle_timeout, UpstreamError::kTimeout, "the response stalled");
    socket_->async_read_some(
        buffer_.prepare(kReadBytes),
        net::bind_executor(executor_, [self = shared_from_this()](error_code ec, size_t n) {
          if (self->done_) return;
          self->buffer_.commit(n);
          if (ec == net::error::eof) return self->AtEof();
          if (ec) {
            self->Fail(UpstreamError::kReset, "the response ended early: " + ec.message(), false);
            return;
          }
          self->ReadBody();
        }));
  }

  // The backend closed the connection: a body that ends with it ends here;
  // any other is cut short.
  void AtEof() {
    if (const error_code ec = ParseBuffered()) return FailMalformed(ec);
    if (!parser_->is_done()) {
      error_code ec;
      parser_->put_eof(ec);
      if (ec) {
        HandOn();
        Fail(UpstreamError::kReset, "the response ended early: " + ec.message(), false);
        return;
      }
    }
    HandOn();
    Finish();
  }

  // Feeds the buffered bytes to the parser (eager: every chunk in them); the
  // parser's error for a malformed body.
  error_code ParseBuffered() {
    while (!parser_->is_done() && buffer_.size() > 0) {
      error_code ec;
      const size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == bhttp::error::need_more) break;
      if (ec) return ec;
      if (used == 0) break;
    }
    return {};
  }

  // A body the parser refused: what it took before the fault is handed on,
  // then the call fails.
  void FailMalformed(const error_code& ec) {
    HandOn();
    Fail(UpstreamError::kProtocol, "malformed response: " + ec.message(), false);
  }

  // The body parsed since the last call, handed on whole; the parser appends
  // what comes next to an empty string.
  void HandOn() {
    std::string& piece = parser_->get().body();
    if (!piece.empty()) handler_->OnBody(std::exchange(piece, std::string()));
  }

  void Finish() {
    done_ = true;
    timer_.cancel();
    if (parser_->keep_alive() && buffer_.size() == 0) {
      endpoint_->PutIdle(loop_, std::move(socket_), up_.options_.max_idle_per_endpoint);
    } else {
      Close();
    }
    End(UpstreamError::kNone, "");
  }

  // `may_retry`: nothing came back on a pooled connection; the backend had
  // likely closed it, so the request is sent once more on a new one.
  void Fail(UpstreamError error, const std::string& message, bool may_retry) {
    if (done_) return;
    Close();
    if (may_retry && reused_ && !got_response_ && !retried_ && error != UpstreamError::kCancelled) {
      retried_ = true;
      buffer_.clear();
      Connect();
      return;
    }
    done_ = true;
    timer_.cancel();
    End(error, endpoint_->address() + ": " + message);
  }

  void End(UpstreamError error, const std::string& message) {
    endpoint_->outstanding.fetch_sub(1, std::memory_order_relaxed);
    std::shared_ptr<UpstreamHandler> handler = std::move(handler_);
    handler->OnDone(error, message);
  }

  void Close() {
    if (!socket_) return;
    error_code ignored;
    socket_->shutdown(tcp::socket::shutdown_both, ignored);
    socket_->close(ignored);
    socket_.reset();
  }

  // One deadline at a time; a later Arm replaces it. Lazily, as the
  // server's: the timer is set again only when the deadline comes earlier
  // than the wait already set (a stream's idle deadline moves later with
  // each read and costs nothing).
  void Arm(std::chrono::milliseconds after, UpstreamError error, const char* what) {
    deadline_ = Clock::now() + after;
    deadline_error_ = error;
    deadline_what_ = what;
    if (deadline_ >= armed_) return;
    armed_ = deadline_;
    timer_.expires_at(armed_);  // A wait set before ends as aborted.
    timer_.async_wait([self = shared_from_this()](error_code ec) { self->OnTimer(ec); });
  }

  void OnTimer(error_code ec) {
    if (ec == net::error::operation_aborted || done_) return;
    armed_ = Clock::time_point::max();
    if (deadline_ <= Clock::now()) {
      Fail(deadline_error_, deadline_what_, false);
      return;
    }
    armed_ = deadline_;
    timer_.expires_at(armed_);
    timer_.async_wait([self = shared_from_this()](error_code e) { self->OnTimer(e); });
  }

  Upstream::Impl& up_;
  const int loop_;  // The I/O loop the call, its socket and its handlers run on.
  // The loop's: one thread, so the call's handlers never run concurrently.
  net::io_context::executor_type executor_;
  net::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();  // Of the step under way.
  Clock::time_point armed_ = Clock::time_point::max();     // The wait set on timer_.
  UpstreamError deadline_error_ = UpstreamError::kTimeout;
  const char* deadline_what_ = "";
  std::shared_ptr<Endpoint> endpoint_;
  const std::string wire_;
  const bool head_only_;
  std::shared_ptr<UpstreamHandler> handler_;
  std::unique_ptr<tcp::socket> socket_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser_;
  bool reused_ = false;
  bool retried_ = false;
  bool got_response_ = false;
  bool done_ = false;
};

}  // namespace

Upstream::Upstream(UpstreamOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Upstream::~Upstream() { impl_.reset(); }

std::shared_ptr<UpstreamCall> Upstream::Send(std::shared_ptr<Endpoint> endpoint,
                                             std::shared_ptr<const UpstreamRequest> request,
                                             std::shared_ptr<UpstreamHandler> handler) {
  auto call =
      std::make_shared<Call>(*impl_, std::move(endpoint), std::move(request), std::move(handler));
  call->Start();
  return call;
}

EndpointRegistry& Upstream::registry() { return impl_->registry_; }

}  // namespace kiln::router
