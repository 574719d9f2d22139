#include "worker/serve/server.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <cpprest/http_listener.h>
#include <cpprest/producerconsumerstream.h>
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

namespace http = web::http;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxBody = 1 << 20;

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
  http::http_request request;
  std::string request_id, id, model;
  int64_t created = 0;
  bool stream = false;
  Clock::time_point start = Clock::now(), first_token;
  bool have_first = false;
  std::string text;               // Non-streaming: the whole text. Streaming: not yet sent.
  std::atomic<bool> gone{false};  // The client went away.
  concurrency::streams::producer_consumer_buffer<uint8_t> body;
  int64_t engine_id = 0;
};

class Server final : public InferenceServer {
 public:
  Server(Engine& engine, const ServerOptions& options, const std::string& url)
      : engine_(engine), options_(options), url_(url), listener_(url) {}

  ~Server() override {
    if (!drained_) Drain(std::chrono::milliseconds(0));
  }

  Status Open() {
    listener_.support([this](http::http_request r) { Handle(std::move(r)); });
    try {
      listener_.open().wait();
    } catch (const std::exception& e) {
      return Status::Unavailable("cannot listen on " + url_ + ": " + e.what());
    }
    loop_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  void SetReady(bool ready) override { ready_ = ready; }
  std::string url() const override { return url_; }
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
    const auto grace = Clock::now() + std::chrono::seconds(5);
    while (in_flight() > 0 && Clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
      std::lock_guard<std::mutex> lock(loop_mu_);
      stop_ = true;
    }
    loop_cv_.notify_all();
    if (loop_.joinable()) loop_.join();
    // The last replies may still be on their way out (bounded: a client that
    // stops reading must not hold the process).
    const auto sent = Clock::now() + std::chrono::seconds(5);
    while (unsent_->load() > 0 && Clock::now() < sent) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    try {
      listener_.close().wait();
    } catch (const std::exception&) {
    }
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

  void Count(const std::string& path, int status) {
    metrics_.requests.Add({{"path", path}, {"code", std::to_string(status)}}).Increment();
  }

  void AddHeaders(http::http_response& r, const std::string& request_id) {
    r.headers().add("X-Kiln-Model-Version", options_.model_version);
    r.headers().add("X-Request-Id", request_id);
    r.headers().add("Cache-Control", "no-cache");
  }

  void Reply(http::http_request& req, const std::string& path, const std::string& request_id,
             int status, const std::string& body, const std::string& type, int retry_after = 0) {
    http::http_response r(static_cast<http::status_code>(status));
    AddHeaders(r, request_id);
    if (retry_after > 0) r.headers().add("Retry-After", std::to_string(retry_after));
    r.set_body(body, type);
    Count(path, status);
    SendReply(req, r, [] {});
  }

  // Replies, counting the reply as unsent until cpprestsdk has written all of
  // it, so that Drain does not close the listener under a reply in flight.
  // `on_error` runs if the client went away first.
  template <typename OnError>
  void SendReply(http::http_request& req, http::http_response& r, OnError on_error) {
    std::shared_ptr<std::atomic<int>> unsent = unsent_;
    unsent->fetch_add(1);
    req.reply(r).then([unsent, on_error](pplx::task<void> t) {
      try {
        t.get();
      } catch (const std::exception&) {
        on_error();
      }
      unsent->fetch_sub(1);
    });
  }

  void ReplyJson(http::http_request& req, const std::string& path, const std::string& request_id,
                 int status, const json& body, int retry_after = 0) {
    Reply(req, path, request_id, status, Dump(body) + "\n", "application/json", retry_after);
  }

  std::string RequestId(const http::http_request& req) {
    auto it = req.headers().find("X-Request-Id");
    if (it != req.headers().end() && !it->second.empty() && it->second.size() <= 128) {
      bool printable = true;
      for (char c : it->second) printable = printable && c > ' ' && c < 127;
      if (printable) return it->second;
    }
    static std::atomic<uint64_t> counter{0};
    Rng rng(static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^ (++counter << 32));
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng.Next()));
    return buf;
  }

  void Handle(http::http_request req) {
    const std::string path = web::uri::decode(req.relative_uri().path());
    const std::string request_id = RequestId(req);
    const auto& method = req.method();
    auto only = [&](const http::method& m) {
      if (method == m) return true;
      ReplyJson(req, path, request_id, 405, ErrorJson(405, "use " + m + " on " + path));
      return false;
    };
    try {
      if (path == "/v1/completions") {
        if (only(http::methods::POST)) Complete(req, path, request_id);
      } else if (path == "/v1/models") {
        if (only(http::methods::GET)) {
          json model = {{"id", options_.model_name},
                        {"object", "model"},
                        {"created", created_},
                        {"owned_by", "kiln"},
                        {"version", options_.model_version}};
          ReplyJson(req, path, request_id, 200,
                    {{"object", "list"}, {"data", json::array({model})}});
        }
      } else if (path == "/healthz") {
        if (only(http::methods::GET)) Reply(req, path, request_id, 200, "ok", "text/plain");
      } else if (path == "/readyz") {
        if (only(http::methods::GET)) {
          if (draining_) {
            Reply(req, path, request_id, 503, "draining", "text/plain");
          } else if (!ready_) {
            Reply(req, path, request_id, 503, "not ready: loading or warming up", "text/plain");
          } else {
            Reply(req, path, request_id, 200, "ok", "text/plain");
          }
        }
      } else if (path == "/metrics") {
        if (only(http::methods::GET)) {
          Reply(req, path, request_id, 200, Scrape(), "text/plain; version=0.0.4; charset=utf-8");
        }
      } else {
        ReplyJson(req, path, request_id, 404, ErrorJson(404, "no such path: " + path));
      }
    } catch (const std::exception& e) {
      ReplyJson(req, path, request_id, 500,
                ErrorJson(500, std::string("internal error: ") + e.what()));
    }
  }

  void Complete(http::http_request& req, const std::string& path, const std::string& request_id) {
    if (draining_) {
      ReplyJson(req, path, request_id, 503,
                ErrorJson(503, "the server is shutting down; retry on another replica"));
      return;
    }
    auto length = req.headers().content_length();
    if (length > kMaxBody) {
      ReplyJson(req, path, request_id, 413, ErrorJson(413, "the request body is over 1 MiB"));
      return;
    }
    std::string body;
    try {
      body = req.extract_utf8string(true).get();
    } catch (const std::exception& e) {
      ReplyJson(req, path, request_id, 400,
                ErrorJson(400, std::string("cannot read the request body: ") + e.what()));
      return;
    }
    if (body.size() > kMaxBody) {
      ReplyJson(req, path, request_id, 413, ErrorJson(413, "the request body is over 1 MiB"));
      return;
    }
    auto parsed = ParseCompletionRequest(body, options_.model_name, engine_.config());
    if (auto* err = std::get_if<RequestError>(&parsed)) {
      ReplyJson(req, path, request_id, err->status,
                ErrorJson(err->status, err->message, err->param));
      return;
    }
    auto& cr = std::get<CompletionRequest>(parsed);
    auto c = std::make_shared<Completion>();
    c->request = req;
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
        ReplyJson(req, path, request_id, 429,
                  ErrorJson(429, id.status().message() + "; retry later"),
                  options_.retry_after_seconds);
      } else {
        ReplyJson(req, path, request_id, 400, ErrorJson(400, id.status().message()));
      }
      return;
    }
    c->engine_id = *id;
    active_.insert(c);
    lock.unlock();
    metrics_.prompt_tokens.Increment(prompt_tokens);
    if (c->stream) {
      // Headers now; chunks follow as the engine produces them.
      http::http_response r(http::status_codes::OK);
      AddHeaders(r, request_id);
      r.set_body(c->body.create_istream(), "text/event-stream");
      Count(path, 200);
      Engine* engine = &engine_;
      SendReply(req, r, [this, c, engine] {
        // The client went away: stop generating for it.
        c->gone = true;
        engine->Cancel(c->engine_id);
        Wake();
      });
    }
    Wake();
  }

  void Send(Completion& c, const std::string& data) {
    if (c.gone) return;
    auto piece = std::make_shared<std::string>(data);
    c.body.putn_nocopy(reinterpret_cast<const uint8_t*>(piece->data()), piece->size())
        .then([piece](pplx::task<size_t> t) {
          try {
            t.get();
          } catch (const std::exception&) {
          }
        });
    // Without a sync the listener's read of the body waits for a whole
    // chunk (or the end): the client would get every event at once.
    c.body.sync().then([](pplx::task<void> t) {
      try {
        t.get();
      } catch (const std::exception&) {
      }
    });
  }

  // On the engine's thread.
  void OnEvent(const std::shared_ptr<Completion>& c, const TokenEvent& e) {
    const auto now = Clock::now();
    if (e.token && !c->have_first) {
      c->have_first = true;
      c->first_token = now;
      metrics_.ttft.Observe(Seconds(now - c->start));
    }
    if (e.token) metrics_.generated_tokens.Increment();
    c->text += e.text;
    if (c->stream && !c->gone) {
      const size_t ready =
          e.finish == FinishReason::kNone ? CompleteUtf8Prefix(c->text) : c->text.size();
      if (ready > 0) {
        Send(*c, "data: " +
                     Dump(ChunkJson(c->id, c->created, c->model, c->text.substr(0, ready),
                                    FinishReason::kNone)) +
                     "\n\n");
        c->text.erase(0, ready);
      }
    }
    if (e.finish == FinishReason::kNone) return;
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
    if (c->stream) {
      if (!c->gone) {
        Send(*c, "data: " + Dump(ChunkJson(c->id, c->created, c->model, "", e.finish)) + "\n\n");
        Send(*c, "data: [DONE]\n\n");
      }
      c->body.close(std::ios_base::out).wait();
    } else if (e.finish == FinishReason::kError) {
      ReplyJson(c->request, "/v1/completions", c->request_id, 500,
                ErrorJson(500, "the model failed while generating; see the server log"));
    } else if (e.finish == FinishReason::kCancelled && draining_) {
      ReplyJson(c->request, "/v1/completions", c->request_id, 503,
                ErrorJson(503, "the server shut down before the completion finished"));
    } else {
      ReplyJson(c->request, "/v1/completions", c->request_id, 200,
                CompletionJson(c->id, c->created, c->model, c->text, e.finish, e.prompt_tokens,
                               e.completion_tokens));
    }
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
    return prometheus::TextSerializer().Serialize(families);
  }

  Engine& engine_;
  const ServerOptions options_;
  const std::string url_;
  const int64_t created_ = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  http::experimental::listener::http_listener listener_;
  ServeMetrics metrics_;
  std::atomic<bool> ready_{false}, draining_{false};
  bool drained_ = false;
  // Replies handed to cpprestsdk and not yet written; shared with their
  // continuations, which may outlive a Drain that gave up waiting.
  std::shared_ptr<std::atomic<int>> unsent_ = std::make_shared<std::atomic<int>>(0);
  mutable std::mutex mu_;  // Guards active_.
  std::set<std::shared_ptr<Completion>> active_;
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false, wake_ = false;
  std::thread loop_;
};

}  // namespace

StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(Engine& engine,
                                                                  const ServerOptions& options) {
  KILN_ASSIGN_OR_RETURN(auto host_port, ParseBindAddress(options.bind_address));
  const std::string host = host_port.first.empty() ? "0.0.0.0" : host_port.first;
  auto server = std::make_unique<Server>(engine, options,
                                         "http://" + host + ":" + std::to_string(host_port.second));
  KILN_RETURN_IF_ERROR(server->Open());
  return std::unique_ptr<InferenceServer>(std::move(server));
}

}  // namespace kiln::serve
