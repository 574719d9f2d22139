#include "router/proxy.h"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "router/request_model.h"

namespace kiln::router {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

uint64_t Random() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Request headers not passed on: hop-by-hop ones, and the router's own.
bool Dropped(const std::string& name) {
  static const std::set<std::string> kDropped = {
      "connection", "keep-alive",        "proxy-connection", "te",    "trailer",
      "upgrade",    "transfer-encoding", "content-length",   "expect"};
  return kDropped.count(name) > 0;
}

// Response headers the server writes itself.
bool ServerOwned(const std::string& name) {
  return name.size() >= 13 && (strcasecmp(name.c_str(), "cache-control") == 0 ||
                               strcasecmp(name.c_str(), "x-content-type-options") == 0);
}

std::string PercentEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string Target(const HttpRequest& r) {
  std::string t = PercentEncode(r.path);
  char sep = '?';
  for (const auto& [k, v] : r.query) {
    t += sep;
    t += PercentEncode(k);
    if (!v.empty()) t += "=" + PercentEncode(v);
    sep = '&';
  }
  return t;
}

// Counts SSE events carrying data (not "[DONE]") across pieces of a stream.
class EventCounter {
 public:
  void Feed(std::string_view data) {
    for (size_t pos = 0; pos < data.size();) {
      const size_t nl = data.find('\n', pos);
      const size_t end = nl == std::string_view::npos ? data.size() : nl;
      if (line_.size() < kKept) {  // Only a line's start matters.
        line_.append(data.data() + pos, std::min(end - pos, kKept - line_.size()));
      }
      if (nl == std::string_view::npos) return;
      if (line_.rfind("data:", 0) == 0) {
        std::string_view v(line_);
        v.remove_prefix(5);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        if (v != "[DONE]" && !v.empty()) ++events_;
      }
      line_.clear();
      pos = nl + 1;
    }
  }
  uint64_t events() const { return events_; }

 private:
  static constexpr size_t kKept = 16;
  std::string line_;
  uint64_t events_ = 0;
};

const char* PickErrorKind(PickError e) {
  switch (e) {
    case PickError::kUnknownModel:
      return "unknown_model";
    case PickError::kNoRoute:
      return "no_route";
    case PickError::kUnknownVersion:
      return "unknown_version";
    case PickError::kNoVersion:
      return "no_version";
    case PickError::kNoEndpoints:
      return "no_endpoints";
    case PickError::kNone:
      break;
  }
  return "none";
}

int PickErrorStatus(PickError e) {
  switch (e) {
    case PickError::kUnknownModel:
    case PickError::kNoRoute:
      return 404;
    case PickError::kUnknownVersion:
      return 400;
    default:
      return 503;
  }
}

// One proxied request: the backend call's handler.
class Forward final : public UpstreamHandler, public std::enable_shared_from_this<Forward> {
 public:
  Forward(Upstream& upstream, RouterMetrics& metrics, size_t max_buffered,
          std::shared_ptr<const RouteTable> table, const TableVersion* version,
          RouterMetrics::Version* stats, std::shared_ptr<const UpstreamRequest> request,
          std::shared_ptr<HttpResponder> responder, Clock::time_point start)
      : upstream_(upstream),
        metrics_(metrics),
        max_buffered_(max_buffered),
        table_(std::move(table)),
        version_(version),
        stats_(stats),
        request_(std::move(request)),
        responder_(std::move(responder)),
        start_(start) {}

  void Send(std::shared_ptr<Endpoint> endpoint) {
    tried_.push_back(endpoint.get());
    std::shared_ptr<UpstreamCall> call =
        upstream_.Send(std::move(endpoint), request_, shared_from_this());
    std::lock_guard<std::mutex> lock(mu_);
    call_ = std::move(call);
    if (cancelled_) call_->Cancel();
  }

  void Cancel() {
    std::shared_ptr<UpstreamCall> call;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      call = call_;
    }
    if (call) call->Cancel();
  }

  void OnHead(UpstreamHead head) override {
    status_ = head.status;
    HttpReply reply;
    reply.status = head.status;
    if (!head.content_type.empty()) reply.content_type = head.content_type;
    for (auto& [k, v] : head.headers) {
      if (!ServerOwned(k)) reply.headers.emplace_back(std::move(k), std::move(v));
    }
    reply.headers.emplace_back("x-kiln-version", version_->config.name);
    event_stream_ = head.content_type.rfind("text/event-stream", 0) == 0;
    json_ = head.content_type.rfind("application/json", 0) == 0;
    if (!head.first_body.empty()) first_byte_ = Seconds(Clock::now() - start_);
    if (head.has_length && head.length <= max_buffered_ && !event_stream_) {
      buffered_ = true;
      reply.body = std::move(head.first_body);
      reply.body.reserve(static_cast<size_t>(head.length));
      head_ = std::move(reply);
      return;
    }
    if (event_stream_) events_.Feed(head.first_body);
    reply.body = std::move(head.first_body);  // Sent with the head, as its first chunk.
    responder_->StartStream(std::move(reply));
  }

  void OnBody(std::string data) override {
    if (first_byte_ < 0) first_byte_ = Seconds(Clock::now() - start_);
    if (buffered_) {
      head_.body += data;
      return;
    }
    if (event_stream_) events_.Feed(data);
    responder_->Write(std::move(data));
  }

  // The request's figures are recorded before its last bytes go to the
  // client (the writes are immediate now): a client that has its whole
  // answer finds it counted.
  void OnDone(UpstreamError error, const std::string& message) override {
    if (error == UpstreamError::kConnect && status_ == 0 && Retry()) {
      return;  // Another endpoint of the version is trying.
    }
    RequestOutcome outcome;
    std::function<void()> answer;
    if (error == UpstreamError::kNone) {
      outcome.status = status_;
      if (status_ >= 500) outcome.error = "status_5xx";
      if (buffered_) {
        if (json_ && status_ == 200) outcome.tokens = ScanCompletionTokens(head_.body);
        answer = [this] { responder_->Reply(std::move(head_)); };
      } else {
        outcome.tokens = events_.events();
        answer = [this] { responder_->Finish(); };
      }
      // A client gone before its answer, unless the version failed it.
      outcome.client_cancelled = !outcome.error && responder_->cancelled();
    } else if (error == UpstreamError::kCancelled) {
      outcome.client_cancelled = true;
    } else {
      outcome.error = UpstreamErrorName(error);
      const bool timeout = error == UpstreamError::kTimeout;
      std::string text = "the backend of version " + version_->config.name + " " +
                         (timeout ? "timed out" : "failed") + ": " + message;
      log::Logger("proxy").Warn(text);
      if (status_ == 0 || buffered_) {
        outcome.status = timeout ? 504 : 502;
        answer = [this, text = std::move(text), status = outcome.status, timeout] {
          responder_->Reply(JsonError(status, "upstream_error",
                                      timeout ? "upstream_timeout" : "upstream_failed", text));
        };
      } else {
        outcome.status = status_;
        if (event_stream_) {
          // In band, as OpenAI reports a failure inside a stream; the
          // stream then ends well-formed.
          json e = {{"error",
                     {{"message", text}, {"type", "upstream_error"}, {"code", "upstream_failed"}}}};
          answer = [this, event = "data: " + e.dump() + "\n\n"]() mutable {
            responder_->Write(std::move(event));
            responder_->Finish();
          };
        } else {
          // Truncated: the client must not take it for whole.
          answer = [this] { responder_->Abort(); };
        }
      }
    }
    outcome.seconds = Seconds(Clock::now() - start_);
    outcome.first_byte_seconds = first_byte_;
    metrics_.EndRequest(stats_, outcome);
    if (answer) answer();
  }

 private:
  // Another endpoint of the version, not tried yet and least loaded.
  bool Retry() {
    std::vector<std::shared_ptr<Endpoint>> rest;
    for (const auto& e : version_->endpoints) {
      if (std::find(tried_.begin(), tried_.end(), e.get()) == tried_.end()) rest.push_back(e);
    }
    std::shared_ptr<Endpoint> next = LeastLoaded(rest, Random());
    if (!next) return false;
    Send(std::move(next));
    return true;
  }

  Upstream& upstream_;
  RouterMetrics& metrics_;
  const size_t max_buffered_;
  const std::shared_ptr<const RouteTable> table_;  // Keeps version_ alive.
  const TableVersion* const version_;
  RouterMetrics::Version* const stats_;
  const std::shared_ptr<const UpstreamRequest> request_;
  const std::shared_ptr<HttpResponder> responder_;
  const Clock::time_point start_;
  // Touched by one call's callbacks at a time; one per endpoint at most.
  std::vector<const Endpoint*> tried_;

  std::mutex mu_;
  std::shared_ptr<UpstreamCall> call_;  // Guarded by mu_.
  bool cancelled_ = false;              // Guarded by mu_.

  int status_ = 0;
  bool buffered_ = false, event_stream_ = false, json_ = false;
  HttpReply head_;
  EventCounter events_;
  double first_byte_ = -1;
};

// A mirrored copy's handler: measures the copy as Forward measures a live
// request (from the moment the router read the request: duration, first
// byte, failure, tokens) and discards the answer.
class MirrorSink final : public UpstreamHandler {
 public:
  MirrorSink(RouterMetrics& metrics, RouterMetrics::Version* stats, size_t max_buffered,
             Clock::time_point start)
      : metrics_(metrics), stats_(stats), max_buffered_(max_buffered), start_(start) {}

  void OnHead(UpstreamHead head) override {
    status_ = head.status;
    event_stream_ = head.content_type.rfind("text/event-stream", 0) == 0;
    // Only a whole JSON reply's usage is read, as the live path reads it.
    keep_body_ = !event_stream_ && head.status == 200 &&
                 head.content_type.rfind("application/json", 0) == 0 && head.has_length &&
                 head.length <= max_buffered_;
    Take(std::move(head.first_body));
  }

  void OnBody(std::string data) override { Take(std::move(data)); }

  void OnDone(UpstreamError error, const std::string&) override {
    RequestOutcome outcome;
    outcome.status = status_;
    if (error == UpstreamError::kNone) {
      if (status_ >= 500) outcome.error = "status_5xx";
      outcome.tokens = event_stream_ ? events_.events()
                       : keep_body_  ? ScanCompletionTokens(body_)
                                     : 0;
    } else if (error == UpstreamError::kCancelled) {
      outcome.client_cancelled = true;
    } else {
      outcome.error = UpstreamErrorName(error);
    }
    outcome.seconds = Seconds(Clock::now() - start_);
    outcome.first_byte_seconds = first_byte_;
    metrics_.Mirrored(stats_, outcome);
  }

 private:
  void Take(std::string data) {
    if (data.empty()) return;
    if (first_byte_ < 0) first_byte_ = Seconds(Clock::now() - start_);
    if (event_stream_) events_.Feed(data);
    if (keep_body_) body_ += data;
  }

  RouterMetrics& metrics_;
  RouterMetrics::Version* const stats_;
  const size_t max_buffered_;
  const Clock::time_point start_;
  int status_ = 0;
  bool event_stream_ = false, keep_body_ = false;
  EventCounter events_;
  std::string body_;
  double first_byte_ = -1;
};

}  // namespace

HttpReply JsonError(int status, const std::string& type, const std::string& code,
                    const std::string& message) {
  HttpReply r;
  r.status = status;
  r.content_type = "application/json";
  r.body = json{{"error", {{"message", message}, {"type", type}, {"code", code}}}}.dump() + "\n";
  return r;
}

Proxy::Proxy(Upstream& upstream, RouterMetrics& metrics, ProxyOptions options)
    : upstream_(upstream), metrics_(metrics), options_(options) {}

Status Proxy::SetConfig(RouteConfig config) {
  KILN_RETURN_IF_ERROR(Validate(config));
  StatusOr<std::shared_ptr<const RouteTable>> table =
      RouteTable::Build(std::move(config), upstream_.registry());
  if (!table.ok()) return table.status();
  std::shared_ptr<const RouteTable> next = *std::move(table);
  std::shared_ptr<const RouteTable> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = std::move(table_);
    table_ = next;
  }
  metrics_.SetConfig(next->config());
  return Status::Ok();  // `old` is released outside the lock.
}

std::shared_ptr<const RouteTable> Proxy::table() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_;
}

void Proxy::Handle(HttpRequest& request, std::shared_ptr<HttpResponder> responder) {
  const Clock::time_point start = Clock::now();
  std::shared_ptr<const RouteTable> table = this->table();
  if (!table) {
    metrics_.Rejected("", "no_route", 503);
    responder->Reply(JsonError(503, "unavailable", "no_routes", "the router has no routes yet"));
    return;
  }
  std::string model;
  if (!request.body.empty()) {
    RequestModel m = ReadRequestModel(request.body);
    if (m.error != RequestModel::Error::kNone) {
      metrics_.Rejected("", "bad_request", 400);
      const bool bad_model = m.error == RequestModel::Error::kModelNotString;
      responder->Reply(JsonError(
          400, "invalid_request_error", bad_model ? "invalid_model" : "invalid_json",
          bad_model ? "model: must be a string, not " + m.model_type
          : m.error == RequestModel::Error::kNotJson ? "the request body is not valid JSON"
                                                     : "the request body is not a JSON object"));
      return;
    }
    model = std::move(m.model);
  }
  const uint64_t random = Random();
  Pick pick = table->Choose(model, request, random);
  if (pick.error != PickError::kNone) {
    const int status = PickErrorStatus(pick.error);
    metrics_.Rejected(pick.route ? pick.route->config.name : "", PickErrorKind(pick.error), status);
    responder->Reply(JsonError(status,
                               status == 404   ? "not_found_error"
                               : status == 400 ? "invalid_request_error"
                                               : "unavailable",
                               PickErrorKind(pick.error), pick.reason));
    return;
  }

  auto upstream_request = std::make_shared<UpstreamRequest>();
  upstream_request->method = std::move(request.method);
  // As the client sent it, as nginx passes it on (a re-encoding of the
  // decoded path could differ from what the client meant).
  upstream_request->target = request.target.empty() ? Target(request) : std::move(request.target);
  upstream_request->headers.reserve(request.headers.size());
  for (auto& [name, value] : request.headers) {
    if (!Dropped(name)) upstream_request->headers.emplace_back(name, std::move(value));
  }
  upstream_request->body = std::move(request.body);

  if (pick.mirror != nullptr) {
    RouterMetrics::Version* mirror_stats =
        metrics_.For(pick.route->config.name, pick.mirror->config.name);
    upstream_.Send(
        pick.mirror_endpoint, upstream_request,
        std::make_shared<MirrorSink>(metrics_, mirror_stats, options_.max_buffered_reply, start));
  }

  RouterMetrics::Version* stats = metrics_.For(pick.route->config.name, pick.version->config.name);
  metrics_.BeginRequest(stats);
  auto forward =
      std::make_shared<Forward>(upstream_, metrics_, options_.max_buffered_reply, table,
                                pick.version, stats, std::move(upstream_request), responder, start);
  responder->OnCancel([weak = std::weak_ptr<Forward>(forward)] {
    if (auto f = weak.lock()) f->Cancel();
  });
  forward->Send(std::move(pick.endpoint));
}

}  // namespace kiln::router
