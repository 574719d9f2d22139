// InferenceServer: kiln-worker serve's HTTP API, on kiln's HttpServer
// (base/http_server.h: its limits and timeouts apply), in front of the
// continuous-batching Engine (engine.h), which it steps on its own thread.
// Thread-safe.
//
//   POST /v1/completions  OpenAI-compatible (openai.h); "stream": true sends
//                         server-sent events, one chunk per released piece of
//                         text, then "data: [DONE]".
//   GET  /v1/models       the one model served.
//   GET  /healthz         the process is alive.
//   GET  /readyz          200 only once the weights are loaded and warmed up
//                         (SetReady), 503 before and while draining.
//   GET  /metrics         Prometheus: kiln_serve_* (see server.cc).
//
// Every response carries X-Kiln-Model-Version (rollouts compare it) and
// X-Request-Id (the client's, or a new one). Refusals are OpenAI-style JSON
// errors: 400 for malformed or out-of-range input (naming the field), 404 for
// another model or path, 405, 413 for a body above 1 MiB, 431 for headers
// above 16 KiB (HttpLimits), 429 with Retry-After when the queue is full, 503
// while draining. A client that goes away before its completion is done
// (streamed or not) has its request cancelled (its KV blocks freed).
#ifndef KILN_WORKER_SERVE_SERVER_H_
#define KILN_WORKER_SERVE_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "base/http_server.h"
#include "base/statusor.h"
#include "worker/serve/engine.h"

namespace kiln::serve {

struct ServerOptions {
  std::string bind_address = ":8000";  // host:port as HttpServer's.
  std::string model_name = "kiln";
  std::string model_version = "unversioned";
  int retry_after_seconds = 1;  // Sent with 429.
  HttpLimits limits;            // The HTTP server's; see base/http_server.h.
  // Tests only: how long a streamed request waits between being queued and
  // its head being sent, so that the engine can finish it first.
  std::chrono::milliseconds stream_head_delay_for_test{0};
};

class InferenceServer {
 public:
  // Starts listening and stepping `engine` (which must outlive the server).
  // InvalidArgument for a bad address; Unavailable when it cannot be bound.
  static StatusOr<std::unique_ptr<InferenceServer>> Start(Engine& engine,
                                                          const ServerOptions& options);
  virtual ~InferenceServer() = default;

  // Runs one short request (a one-token prompt, two tokens out) through the
  // engine on the serving thread and waits for it, so that prefill, decode
  // and sampling have all run once before readiness. On the CPU it also
  // keeps every OpenMP parallel region of the process on that one thread:
  // libgomp gives each thread that starts a region its own team of workers,
  // and once it manages more threads than there are CPUs it no longer spins
  // between regions but sleeps and wakes, each of a decode step's ~60 regions
  // (a warm-up on another thread made single-stream serving 4x slower).
  // Internal when the decoder fails.
  virtual Status WarmUp() = 0;
  virtual void SetReady(bool ready) = 0;
  // Graceful stop: refuses new completions (503) and /readyz, lets queued and
  // running requests finish until `timeout`, cancels what is left, then stops
  // stepping and listening. Returns within `timeout` + 2 s whatever clients
  // do (1 s for the engine to deliver the cancellations, 1 s for the HTTP
  // server to send the last replies). Returns how many requests it had to
  // cancel.
  virtual int Drain(std::chrono::milliseconds timeout) = 0;
  virtual std::string url() const = 0;  // e.g. "http://127.0.0.1:8000"
  // Requests accepted and not yet finished.
  virtual int in_flight() const = 0;
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_SERVER_H_
