// HttpServer: kiln's one HTTP/1.1 server (kiln-worker serve's API, the
// operator's probes and /metrics, train's /metrics), on Boost.Beast's parser
// over Boost.Asio. Thread-safe: Start, Drain, url and stats may be called from
// any thread; handlers run on the server's I/O threads and must be
// thread-safe.
//
// Model: a fixed set of event loops, one thread each (base/io_threads.h;
// HttpServerOptions::io_threads), serves every connection asynchronously.
// Each accepted connection goes to the next loop and stays there, so its
// handlers never run concurrently; no thread is tied to a connection or a
// request, so a client that stalls costs a socket and a timer, never a
// thread. A synchronous handler holds up its loop's other connections while
// it runs: it must be quick. Requests are read whole (header, then body) before routing; a
// connection is kept alive between requests unless either side says close.
//
// Routing: by method and path, exact or prefix ("/readyz" as a prefix matches
// "/readyz" and "/readyz/x", not "/readyzx"); the longest matching path wins.
// No path matches: 404. The path matches but not the method: 405 with Allow.
// A GET route also answers HEAD (the body left out).
//
// Limits (HttpLimits, defaults in brackets, after nginx and Envoy):
//   max_header_bytes    request line + header fields [16 KiB]; over: 431.
//   max_body_bytes      request body [1 MiB]; over (Content-Length or as
//                       read): 413. Malformed requests get 400. All three
//                       name the reason and close the connection.
//   header_timeout      from a request's first byte (or the connection's
//                       accept) to the end of its header [10 s].
//   body_idle_timeout   the longest wait for the next body bytes [10 s].
//   body_timeout        the whole body [60 s].
//   keep_alive_timeout  idle between requests on a kept-alive connection
//                       [75 s].
//   write_timeout       the longest a response write may make no progress
//                       (a peer that stops reading) [60 s].
//   max_stream_backlog  a stream's bytes queued behind a peer that reads
//                       slower than they come [8 MiB]; over: closed.
//   max_connections     open connections [1024]; at the limit a new
//                       connection reclaims the one idle or reading for the
//                       longest (a request being handled is never reclaimed);
//                       with none to reclaim the new one is closed.
// A read timeout closes the connection without a reply; a write timeout or
// a backlog over the limit closes it and cancels the response (see
// HttpResponder).
//
// Handlers are synchronous (HttpHandler: return a small reply; runs on an I/O
// thread, so it must be quick) or asynchronous (HttpAsyncHandler: answer
// later, from any thread, through the HttpResponder, as a whole reply or as a
// stream of chunks). A peer that goes away while its request is handled (it
// closes or resets the connection; a half-close counts) is noticed at once,
// without a write, and the responder cancelled. (A peer that has pipelined
// its next request is watched no further until the answer is written: its
// going away is then seen by the write.)
//
// Drain: stops accepting, closes idle connections, lets requests being read
// or handled finish until the deadline, then closes every connection (which
// cancels the responders still open) and stops the I/O threads. It returns
// within its deadline, plus the time a running synchronous handler takes to
// return.
#ifndef KILN_BASE_HTTP_SERVER_H_
#define KILN_BASE_HTTP_SERVER_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/statusor.h"

namespace kiln {

struct HttpRequest {
  std::string path;                            // Decoded, without the query: "/readyz/informers".
  std::map<std::string, std::string> query;    // Decoded ?key=value pairs ("?verbose": "").
  std::string method;                          // "GET", "POST", ...
  std::map<std::string, std::string> headers;  // Names lower-cased; repeated fields joined by ",".
  std::string body;
  std::string target;  // As sent: "/v1/x%20y?a=1" (not decoded).

  // The header's value, or "" (`name` lower-case).
  std::string Header(const std::string& name) const;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // Added to the defaults.
};

// Answers one request, once, from any thread. Either Reply, or StartStream
// then any number of Write and one Finish (chunked transfer-encoding, each
// Write sent as it comes). Calls never block: bytes are queued for the I/O
// threads. A responder dropped without an answer replies 500.
class HttpResponder {
 public:
  HttpResponder() = default;
  HttpResponder(const HttpResponder&) = delete;
  HttpResponder& operator=(const HttpResponder&) = delete;
  virtual ~HttpResponder() = default;
  // The whole response. False when cancelled or already answered.
  virtual bool Reply(HttpReply reply) = 0;
  // The head of a streamed response; `reply.body`, if any, is the first chunk.
  virtual bool StartStream(HttpReply head) = 0;
  // One chunk of a started stream (empty: nothing is sent). False once
  // cancelled: the caller should stop producing.
  virtual bool Write(std::string chunk) = 0;
  // Ends the stream.
  virtual bool Finish() = 0;
  // Ends a started stream that cannot be completed (its source failed): the
  // bytes written so far are sent, then the connection is closed without the
  // stream's last chunk, so the client sees a truncated response, not a
  // whole one. False when not streaming or cancelled.
  virtual bool Abort() = 0;
  // True once the peer went away, a write timed out, or the server drained
  // past its deadline; nothing more will be sent.
  virtual bool cancelled() const = 0;
  // Runs `on_cancel` once when the responder is cancelled before it has
  // answered (at once if it already is), on an I/O thread or the caller's.
  // Must be quick and must not call back into this responder.
  virtual void OnCancel(std::function<void()> on_cancel) = 0;
};

using HttpHandler = std::function<HttpReply(const HttpRequest&)>;
// The request is the handler's: it may take parts of it (a proxy moves the
// body on). A handler taking `const HttpRequest&` converts.
using HttpAsyncHandler =
    std::function<void(HttpRequest& request, std::shared_ptr<HttpResponder> responder)>;

enum class HttpMatch { kExact, kPrefix };

struct HttpRoute {
  std::string method;  // "GET" (also answers HEAD), "POST", ...
  std::string path;
  HttpMatch match = HttpMatch::kExact;
  HttpAsyncHandler handler;

  static HttpRoute Get(std::string path, HttpHandler handler, HttpMatch match = HttpMatch::kExact);
  static HttpRoute Async(std::string method, std::string path, HttpAsyncHandler handler,
                         HttpMatch match = HttpMatch::kExact);
};

struct HttpLimits {
  size_t max_header_bytes = 16 << 10;
  size_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds body_idle_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds body_timeout = std::chrono::seconds(60);
  std::chrono::milliseconds keep_alive_timeout = std::chrono::seconds(75);
  std::chrono::milliseconds write_timeout = std::chrono::seconds(60);
  size_t max_stream_backlog = 8 << 20;
  int max_connections = 1024;
};

// The reply the server makes itself (404, 405, 413, 431, 400, and 500 for a
// handler that threw or gave no answer). `request` holds what was parsed
// (possibly nothing). The default: text/plain, the message and a newline.
using HttpErrorReply =
    std::function<HttpReply(const HttpRequest& request, int status, const std::string& message)>;

class IoThreads;  // base/io_threads.h

struct HttpServerOptions {
  // As ParseBindAddress; the host an IP address, "localhost" or empty (all
  // interfaces).
  std::string bind_address = ":8080";
  int io_threads = 2;
  // Threads shared with other users (io_threads is then ignored): Drain
  // closes this server's connections and leaves the threads running.
  std::shared_ptr<IoThreads> shared_io;
  HttpLimits limits;
  HttpErrorReply error_reply;  // Null: the default.
  // Sent with every response, e.g. a model version.
  std::vector<std::pair<std::string, std::string>> default_headers;
};

struct HttpServerStats {
  int connections = 0;  // Open.
  int handling = 0;     // Requests read and not yet answered in full.
  bool draining = false;
};

class HttpServer {
 public:
  // Listens on `options.bind_address` and serves `routes`. InvalidArgument
  // for a malformed address or option, Unavailable when the port cannot be
  // bound.
  static StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                     std::vector<HttpRoute> routes);
  HttpServer() = default;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Drains with no wait.
  virtual ~HttpServer() = default;

  // See the file comment. Returns true when every connection had finished
  // before the deadline. A second call returns at once.
  virtual bool Drain(std::chrono::milliseconds timeout) = 0;
  virtual const std::string& url() const = 0;  // e.g. "http://127.0.0.1:8080"
  virtual HttpServerStats stats() const = 0;
};

// Splits "host:port" (host may be empty or bracketed IPv6); InvalidArgument
// unless the port is 1-65535.
StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& address);

}  // namespace kiln

#endif  // KILN_BASE_HTTP_SERVER_H_
