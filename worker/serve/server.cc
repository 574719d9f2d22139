#include "worker/serve/server.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "base/http_server.h"
#include "base/log.h"
#include "worker/serve/openai.h"

namespace kiln::serve {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The metrics of the server, all prefixed kiln_serve_.
struct ServeMetrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("kiln_serve_requests_total")
          .Help("HTTP requests answered, by path and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& finished =
      prometheus::BuildCounter()
          .Name("kiln_serve_completions_total")
          .Help("Completions finished, by finish reason (stop, length, cancelled, error)")
          .Register(*registry);
  prometheus::Counter& prompt_tokens = prometheus::BuildCounter()
                                           .Name("kiln_serve_prompt_tokens_total")
                                           .Help("Prompt tokens of accepted completions")
                                           .Register(*registry)
                                           .Add({});
  prometheus::Counter& cached_prompt_tokens =
      prometheus::BuildCounter()
          .Name("kiln_serve_prompt_tokens_cached_total")
          .Help("Prompt tokens found in the prefix cache, not computed again")
          .Register(*registry)
          .Add({});
  prometheus::Counter& generated_tokens = prometheus::BuildCounter()
                                              .Name("kiln_serve_generation_tokens_total")
                                              .Help("Tokens generated")
                                              .Register(*registry)
                                              .Add({});
  prometheus::Histogram& ttft =
      prometheus::BuildHistogram()
          .Name("kiln_serve_time_to_first_token_seconds")
          .Help("From accepting a completion to its first token")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                           1, 2.5, 5, 10, 30});
  prometheus::Histogram& tpot =
      prometheus::BuildHistogram()
          .Name("kiln_serve_time_per_output_token_seconds")
          .Help("Mean time between a completion's output tokens")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1, 0.25, 0.5, 1});
  prometheus::Histogram& latency =
      prometheus::BuildHistogram()
          .Name("kiln_serve_request_duration_seconds")
          .Help("From accepting a completion to its last byte")
          .Register(*registry)
          .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                           2.5, 5, 10, 30, 60});
};

// One accepted completion, shared by the handler and the engine callback.
struct Completion {
  std::shared_ptr<HttpResponder> out;
  std::string request_id, id, model;
  int64_t created = 0;
  bool stream = false;
  Clock::time_point start = Clock::now(), first_token;
  bool have_first = false;
  int cached_prompt_tokens = 0;  // From the first token's event.
  std::string text;              // Non-streaming: the whole text. Streaming: not yet sent.
  int64_t engine_id = 0;
  // Streaming: the engine may produce tokens, even finish, before the
  // handler has sent the stream's head (Submit comes first, so that a
  // refused request still gets its 4xx). Until then its events only gather
  // in `text` and `finish`; the handler sends them after the head.
  std::mutex stream_mu;
  bool head_sent = false;                     // Guarded by stream_mu.
  FinishReason finish = FinishReason::kNone;  // Guarded by stream_mu (streaming).
};

// The time Drain allows, past its timeout, for the engine to deliver the
// cancellations and for the HTTP server to send the last replies.
constexpr auto kCancelGrace = std::chrono::seconds(1);
constexpr auto kFlushTime = std::chrono::seconds(1);

class Server final : public InferenceServer {
 public:
  Server(Engine& engine, const ServerOptions& options) : engine_(engine), options_(options) {}

  ~Server() override {
    if (!drained_) Drain(std::chrono::milliseconds(0));
  }

  Status Open() {
    HttpServerOptions http;
    http.bind_address = options_.bind_address;
    http.limits = options_.limits;
    http.default_headers = {{"X-Kiln-Model-Version", options_.model_version}};
    http.error_reply = [this](const HttpRequest& r, int status, const std::string& message) {
      return JsonReply(Known(r.path), RequestId(r), status, ErrorJson(status, message));
    };
    auto text = [this](const std::string& path, auto body) {
      return HttpRoute::Get(path, [this, path, body](const HttpRequest& r) {
        auto [status, content] = body();
        return Text(path, RequestId(r), status, content, "text/plain");
      });
    };
    std::vector<HttpRoute> routes = {
        HttpRoute::Async("POST", "/v1/completions",
                         [this](const HttpRequest& r, std::shared_ptr<HttpResponder> out) {
                           Complete(r, std::move(out));
                         }),
        HttpRoute::Get("/v1/models",
                       [this](const HttpRequest& r) {
                         json model = {{"id", options_.model_name},
                                       {"object", "model"},
                                       {"created", created_},
                                       {"owned_by", "kiln"},
                                       {"version", options_.model_version}};
                         return JsonReply("/v1/models", RequestId(r), 200,
                                          {{"object", "list"}, {"data", json::array({model})}});
                       }),
        text("/healthz", [] { return std::pair<int, std::string>(200, "ok"); }),
        text("/readyz",
             [this] {
               if (draining_) return std::pair<int, std::string>(503, "draining");
               if (!ready_)
                 return std::pair<int, std::string>(503, "not ready: loading or warming up");
               return std::pair<int, std::string>(200, "ok");
             }),
        HttpRoute::Get("/metrics", [this](const HttpRequest& r) {
          return Text("/metrics", RequestId(r), 200, Scrape(),
                      "text/plain; version=0.0.4; charset=utf-8");
        })};
    KILN_ASSIGN_OR_RETURN(http_, HttpServer::Start(std::move(http), std::move(routes)));
    loop_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  Status WarmUp() override {
    struct Done {
      std::mutex mu;
      std::condition_variable cv;
      std::optional<FinishReason> reason;
    };
    auto done = std::make_shared<Done>();
    auto id = engine_.Submit({.prompt = {'\n'}, .max_tokens = 2}, [done](const TokenEvent& e) {
      if (e.finish == FinishReason::kNone) return;
      std::lock_guard<std::mutex> lock(done->mu);
      done->reason = e.finish;
      done->cv.notify_all();
    });
    if (!id.ok()) return id.status();
    Wake();
    std::unique_lock<std::mutex> lock(done->mu);
    done->cv.wait(lock, [&] { return done->reason.has_value(); });
    if (*done->reason == FinishReason::kError) {
      return Status::Internal("the warm-up request failed: the decoder failed (see the log above)");
    }
    return Status::Ok();
  }

  void SetReady(bool ready) override { ready_ = ready; }
  std::string url() const override { return http_->url(); }
  int in_flight() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(active_.size());
  }

  int Drain(std::chrono::milliseconds timeout) override {
    draining_ = true;
    const auto deadline = Clock::now() + timeout;
    while (in_flight() > 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    int cancelled = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& c : active_) {
        engine_.Cancel(c->engine_id);
        ++cancelled;
      }
    }
    Wake();
    // The loop delivers the cancellations at its next step.
    const auto grace = Clock::now() + kCancelGrace;
    while (in_flight() > 0 && Clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
      std::lock_guard<std::mutex> lock(loop_mu_);
      stop_ = true;
    }
    loop_cv_.notify_all();
    if (loop_.joinable()) loop_.join();
    // The last replies may still be on their way out; a client that stops
    // reading, or never finishes its request, is cut off.
    if (http_) http_->Drain(kFlushTime);
    drained_ = true;
    return cancelled;
  }

 private:
  void Wake() {
    {
      std::lock_guard<std::mutex> lock(loop_mu_);
      wake_ = true;
    }
    loop_cv_.notify_all();
  }

  void Loop() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(loop_mu_);
        if (stop_) return;
      }
      auto worked = engine_.Step();
      if (!worked.ok()) {
        log::Logger("serve").Error(worked.status(), "decoder step failed");
      } else if (!*worked) {
        std::unique_lock<std::mutex> lock(loop_mu_);
        loop_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_ || wake_; });
        wake_ = false;
      }
    }
  }

  // The path as a metrics label: one of the routes, else "other" (a label
  // per unknown path would grow without bound).
  static std::string Known(const std::string& path) {
    for (const char* p : {"/v1/completions", "/v1/models", "/healthz", "/readyz", "/metrics"}) {
      if (path == p) return path;
    }
    return "other";
  }

  void Count(const std::string& path, int status) {
    metrics_.requests.Add({{"path", path}, {"code", std::to_string(status)}}).Increment();
  }

  HttpReply Text(const std::string& path, const std::string& request_id, int status,
                 std::string body, const std::string& type, int retry_after = 0) {
    HttpReply r{status, type, std::move(body), {{"X-Request-Id", request_id}}};
    // The requests this worker holds (waiting and running), for kiln-router's
    // least-loaded endpoint choice across router replicas.
    r.headers.emplace_back("X-Kiln-Queue-Depth",
                           std::to_string(engine_.queued() + engine_.running()));
    if (retry_after > 0) r.headers.emplace_back("Retry-After", std::to_string(retry_after));
    Count(path, status);
    return r;
  }

  HttpReply JsonReply(const std::string& path, const std::string& request_id, int status,
                      const json& body, int retry_after = 0) {
    return Text(path, request_id, status, Dump(body) + "\n", "application/json", retry_after);
  }

  static std::string RequestId(const HttpRequest& req) {
    const std::string given = req.Header("x-request-id");
    if (!given.empty() && given.size() <= 128) {
      bool printable = true;
      for (char c : given) printable = printable && c > ' ' && c < 127;
      if (printable) return given;
    }
    static std::atomic<uint64_t> counter{0};
    Rng rng(static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^ (++counter << 32));
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng.Next()));
    return buf;
  }

  void Complete(const HttpRequest& req, std::shared_ptr<HttpResponder> out) {
    const std::string path = "/v1/completions";
    const std::string request_id = RequestId(req);
    auto refuse = [&](int status, const json& body, int retry_after = 0) {
      out->Reply(JsonReply(path, request_id, status, body, retry_after));
    };
    if (draining_) {
      return refuse(503, ErrorJson(503, "the server is shutting down; retry on another replica"));
    }
    auto parsed = ParseCompletionRequest(req.body, options_.model_name, engine_.config());
    if (auto* err = std::get_if<RequestError>(&parsed)) {
      return refuse(err->status, ErrorJson(err->status, err->message, err->param));
    }
    auto& cr = std::get<CompletionRequest>(parsed);
    auto c = std::make_shared<Completion>();
    c->out = out;
    c->request_id = request_id;
    c->id = "cmpl-" + request_id;
    c->model = options_.model_name;
    c->created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    c->stream = cr.stream;
    const int prompt_tokens = static_cast<int>(cr.generate.prompt.size());
    // Register before submitting: the callback may run before Submit returns.
    std::unique_lock<std::mutex> lock(mu_);
    auto id =
        engine_.Submit(std::move(cr.generate), [this, c](const TokenEvent& e) { OnEvent(c, e); });
    if (!id.ok()) {
      lock.unlock();
      if (id.status().code() == StatusCode::kResourceExhausted) {
        return refuse(429, ErrorJson(429, id.status().message() + "; retry later"),
                      options_.retry_after_seconds);
      }
      return refuse(400, ErrorJson(400, id.status().message()));
    }
    c->engine_id = *id;
    active_.insert(c);
    lock.unlock();
    metrics_.prompt_tokens.Increment(prompt_tokens);
    if (c->stream) {
      // Headers now; chunks follow as the engine produces them. What it
      // produced before this goes out right after the head.
      if (options_.stream_head_delay_for_test.count() > 0) {
        std::this_thread::sleep_for(options_.stream_head_delay_for_test);
      }
      out->StartStream(Text(path, request_id, 200, "", "text/event-stream"));
      std::lock_guard<std::mutex> stream_lock(c->stream_mu);
      c->head_sent = true;
      SendStream(*c, *out);
    }
    // The client went away (or the server is closing its connection): stop
    // generating for it, whole or streamed.
    Engine* engine = &engine_;
    const int64_t engine_id = c->engine_id;
    out->OnCancel([this, engine, engine_id] {
      engine->Cancel(engine_id);
      Wake();
    });
    Wake();
  }

  // On the engine's thread.
  void OnEvent(const std::shared_ptr<Completion>& c, const TokenEvent& e) {
    const auto now = Clock::now();
    if (e.token && !c->have_first) {
      c->have_first = true;
      c->first_token = now;
      metrics_.ttft.Observe(Seconds(now - c->start));
      metrics_.cached_prompt_tokens.Increment(e.cached_prompt_tokens);
      c->cached_prompt_tokens = e.cached_prompt_tokens;
    }
    if (e.token) metrics_.generated_tokens.Increment();
    if (e.finish != FinishReason::kNone) {
      {
        // Before the reply: a client that has its answer sees it finished.
        std::lock_guard<std::mutex> lock(mu_);
        active_.erase(c);
      }
      metrics_.finished.Add({{"finish_reason", FinishReasonName(e.finish)}}).Increment();
      if (c->have_first && e.completion_tokens > 1) {
        metrics_.tpot.Observe(Seconds(now - c->first_token) / (e.completion_tokens - 1));
      }
      metrics_.latency.Observe(Seconds(now - c->start));
    }
    if (c->stream) {
      std::lock_guard<std::mutex> stream_lock(c->stream_mu);
      c->text += e.text;
      c->finish = e.finish;
      // Before the head is out, the handler sends this once it is.
      if (c->head_sent) SendStream(*c, *c->out);
    } else {
      c->text += e.text;
    }
    if (e.finish == FinishReason::kNone) return;
    const std::string path = "/v1/completions";
    if (c->stream) {
      // Sent above, or by the handler after the head.
    } else if (e.finish == FinishReason::kError) {
      c->out->Reply(
          JsonReply(path, c->request_id, 500,
                    ErrorJson(500, "the model failed while generating; see the server log")));
    } else if (e.finish == FinishReason::kCancelled && draining_) {
      c->out->Reply(
          JsonReply(path, c->request_id, 503,
                    ErrorJson(503, "the server shut down before the completion finished")));
    } else if (!c->out->cancelled()) {
      c->out->Reply(
          JsonReply(path, c->request_id, 200,
                    CompletionJson(c->id, c->created, c->model, c->text, e.finish, e.prompt_tokens,
                                   e.completion_tokens, c->cached_prompt_tokens)));
    }
    c->out.reset();  // The handler sends a stream's end with its own reference.
  }

  // A stream's text not yet sent, as far as it is whole UTF-8 (all of it
  // once finished), then, once finished, the last chunk, [DONE] and the end.
  // With c.stream_mu held, after the head.
  static void SendStream(Completion& c, HttpResponder& out) {
    const size_t ready =
        c.finish == FinishReason::kNone ? CompleteUtf8Prefix(c.text) : c.text.size();
    if (ready > 0) {
      // False once the client is gone; the cancellation is on its way.
      out.Write(
          "data: " +
          Dump(ChunkJson(c.id, c.created, c.model, c.text.substr(0, ready), FinishReason::kNone)) +
          "\n\n");
      c.text.erase(0, ready);
    }
    if (c.finish == FinishReason::kNone) return;
    out.Write("data: " + Dump(ChunkJson(c.id, c.created, c.model, "", c.finish)) + "\n\n");
    out.Write("data: [DONE]\n\n");
    out.Finish();
  }

  std::string Scrape() {
    auto families = metrics_.registry->Collect();
    auto gauge = [&](const std::string& name, const std::string& help, double value) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = prometheus::MetricType::Gauge;
      prometheus::ClientMetric m;
      m.gauge.value = value;
      f.metric.push_back(m);
      families.push_back(std::move(f));
    };
    gauge("kiln_serve_queue_depth", "Completions waiting for a place in the running batch",
          engine_.queued());
    gauge("kiln_serve_running_requests", "Completions in the running batch", engine_.running());
    gauge("kiln_serve_kv_cache_utilization", "Fraction of KV-cache blocks in use",
          engine_.kv_utilization());
    gauge("kiln_serve_in_flight_requests", "Completions accepted and not finished", in_flight());
    gauge("kiln_serve_ready", "1 when /readyz answers 200", ready_ && !draining_ ? 1 : 0);
    gauge("kiln_serve_http_connections", "Open HTTP connections, idle ones included",
          http_ ? http_->stats().connections : 0);
    return prometheus::TextSerializer().Serialize(families);
  }

  Engine& engine_;
  const ServerOptions options_;
  const int64_t created_ = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  ServeMetrics metrics_;
  std::atomic<bool> ready_{false}, draining_{false};
  bool drained_ = false;
  mutable std::mutex mu_;  // Guards active_.
  std::set<std::shared_ptr<Completion>> active_;
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false, wake_ = false;
  std::thread loop_;
  std::unique_ptr<HttpServer> http_;  // Last: drained (in Drain) before the rest goes.
};

}  // namespace

StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(Engine& engine,
                                                                  const ServerOptions& options) {
  auto server = std::make_unique<Server>(engine, options);
  KILN_RETURN_IF_ERROR(server->Open());
  return std::unique_ptr<InferenceServer>(std::move(server));
}

}  // namespace kiln::serve
