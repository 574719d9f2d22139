// The router's request path over real sockets on 127.0.0.1: kiln-router's
// Proxy behind base's HttpServer, in front of backends that are HttpServers
// too (or raw sockets, to misbehave). Every wait is bounded; nothing asserts
// speed, only "answered within a generous bound".
#include "router/proxy.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "base/io_threads.h"
#include "router/window_summary.h"
#include "tests/support/http_probe.h"
#include "tests/support/raw_http.h"
#include "tests/support/wait.h"

namespace kiln::router {
namespace {

using kiln::testing::FreePort;
using kiln::testing::RawHttp;
using kiln::testing::RawResponse;
using Clock = std::chrono::steady_clock;
using kiln::testing::Latch;
using kiln::testing::WaitFor;
using nlohmann::json;

// A backend playing one version: answers completions with its name, counts
// them, and streams when asked ("stream": true) through `stream` if set.
struct Backend {
  std::string name;
  int port = 0;
  std::atomic<int> requests{0};
  std::function<void(const HttpRequest&, std::shared_ptr<HttpResponder>)> stream;
  std::unique_ptr<HttpServer> server;

  explicit Backend(std::string n) : name(std::move(n)) {
    port = FreePort();
    auto handler = [this](const HttpRequest& r, std::shared_ptr<HttpResponder> responder) {
      ++requests;
      json body = json::parse(r.body, nullptr, false);
      if (stream && body.is_object() && body.value("stream", false)) {
        stream(r, std::move(responder));
        return;
      }
      responder->Reply({200,
                        "application/json",
                        json{{"model", name},
                             {"path", r.path},
                             {"session", r.Header("x-session")},
                             {"usage", {{"completion_tokens", 4}}}}
                            .dump(),
                        {{"x-kiln-backend", name}}});
    };
    auto s = HttpServer::Start({.bind_address = "127.0.0.1:" + std::to_string(port)},
                               {HttpRoute::Async("POST", "/v1/completions", handler),
                                HttpRoute::Async("POST", "/v1/chat/completions", handler)});
    REQUIRE(s.ok());
    server = std::move(*s);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

// A backend on a raw socket that answers each connection with `script`
// (given the request it read) and closes.
class RawBackend {
 public:
  explicit RawBackend(std::function<void(int fd)> script) : script_(std::move(script)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd_, 16) == 0);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        // Read the request head (and a small body) first.
        std::string got;
        char buf[4096];
        while (got.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          got.append(buf, static_cast<size_t>(n));
        }
        script_(c);
        close(c);
      }
    });
  }
  ~RawBackend() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::function<void(int fd)> script_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

void SendAll(int fd, const std::string& s) { (void)!send(fd, s.data(), s.size(), MSG_NOSIGNAL); }

UpstreamOptions Shared(UpstreamOptions options, std::shared_ptr<IoThreads> io) {
  options.shared_io = std::move(io);
  return options;
}

// As kiln-router runs them: the server and the upstream on one set of loops.
struct Router {
  std::shared_ptr<IoThreads> io = std::make_shared<IoThreads>(2);
  RouterMetrics metrics;
  Upstream upstream;
  Proxy proxy;
  std::unique_ptr<HttpServer> server;
  int port = 0;

  explicit Router(RouteConfig config, UpstreamOptions up = {}, HttpLimits limits = {})
      : upstream(Shared(up, io)), proxy(upstream, metrics) {
    REQUIRE(proxy.SetConfig(std::move(config)).ok());
    port = FreePort();
    auto handler = [this](HttpRequest& r, std::shared_ptr<HttpResponder> responder) {
      proxy.Handle(r, std::move(responder));
    };
    HttpServerOptions options{
        .bind_address = "127.0.0.1:" + std::to_string(port), .shared_io = io, .limits = limits};
    options.error_reply = [](const HttpRequest&, int status, const std::string& message) {
      return JsonError(status, "invalid_request_error", "bad_request", message);
    };
    auto s =
        HttpServer::Start(options, {HttpRoute::Async("POST", "/", handler, HttpMatch::kPrefix),
                                    HttpRoute::Async("GET", "/", handler, HttpMatch::kPrefix)});
    REQUIRE(s.ok());
    server = std::move(*s);
  }
  ~Router() {
    server->Drain(std::chrono::seconds(2));
    io->Stop();  // No call runs on into the upstream being destroyed.
  }
};

RouteConfig Chat(std::vector<std::string> stable, std::vector<std::string> canary,
                 int canary_weight, uint64_t generation = 1) {
  RouteConfig c;
  c.generation = generation;
  c.routes.push_back({.name = "default/chat",
                      .models = {"chat"},
                      .versions = {{"v1", "stable", 100 - canary_weight, std::move(stable)},
                                   {"v2", "canary", canary_weight, std::move(canary)}},
                      .sticky_header = "x-session"});
  return c;
}

RawResponse Post(int port, const std::string& body,
                 const std::map<std::string, std::string>& headers = {}) {
  RawHttp h(port, "POST", "/v1/completions", body, headers);
  REQUIRE(h.connected());
  return h.Finish();
}

std::string ErrorCode(const RawResponse& r) {
  json j = json::parse(r.body, nullptr, false);
  return j.is_object() ? j["error"].value("code", "") : "(not JSON: " + r.body + ")";
}

TEST_CASE("requests reach the version the table picks, with the version in the reply",
          "[router][proxy]") {
  Backend v1("v1"), v2("v2");
  Router router(Chat({v1.address()}, {v2.address()}, 0));
  RawResponse r = Post(router.port, R"({"model": "chat", "prompt": "hi"})");
  CHECK(r.status == 200);
  CHECK(r.headers["x-kiln-version"] == "v1");
  CHECK(r.headers["x-kiln-backend"] == "v1");
  CHECK(json::parse(r.body)["path"] == "/v1/completions");
  r = Post(router.port, R"({"model": "chat"})",
           {{"x-kiln-version", "canary"}, {"x-session", "s1"}});
  CHECK(r.headers["x-kiln-version"] == "v2");
  CHECK(json::parse(r.body)["session"] == "s1");  // Headers pass through.
  CHECK(v1.requests == 1);
  CHECK(v2.requests == 1);
}

TEST_CASE("backend connections are kept alive and reused", "[router][proxy]") {
  Backend v1("v1");
  Router router(Chat({v1.address()}, {}, 0));
  RawHttp client(router.port);
  REQUIRE(client.connected());
  for (int i = 0; i < 50; ++i) {
    REQUIRE(client.Send(RawHttp::Request("POST", "/v1/completions", R"({"model": "chat"})")));
    RawResponse r = client.Next();
    REQUIRE(r.status == 200);
  }
  CHECK(v1.requests == 50);
  // One client at a time: one pooled connection carried all 50.
  CHECK(v1.server->stats().connections == 1);
}

TEST_CASE("a pooled connection the backend has closed is replaced without failing the request",
          "[router][proxy]") {
  // Each connection answers one request as if keeping it alive, then closes:
  // the router pools it, and the next request meets the closed connection
  // (taken without a look, having been idle under a second) and is sent
  // again on a new one.
  std::atomic<int> connections{0};
  RawBackend once([&](int fd) {
    ++connections;
    SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
  });
  Router router(Chat({once.address()}, {}, 0));
  RawHttp client(router.port);
  REQUIRE(client.connected());
  for (int i = 0; i < 5; ++i) {
    REQUIRE(client.Send(RawHttp::Request("POST", "/v1/completions", R"({"model": "chat"})")));
    RawResponse r = client.Next();
    CHECK(r.status == 200);
    CHECK(r.body == "{}");
  }
  CHECK(connections == 5);
  CHECK_THAT(router.metrics.Scrape(), !Catch::Contains("kiln_router_errors_total{"));
}

TEST_CASE("a streamed completion arrives through the router piece by piece", "[router][proxy]") {
  Backend v1("v1");
  Latch first_read, rest;
  std::thread producer;
  v1.stream = [&](const HttpRequest&, std::shared_ptr<HttpResponder> responder) {
    HttpReply head{200, "text/event-stream"};
    responder->StartStream(head);
    responder->Write("data: {\"text\": \"tok0\"}\n\n");
    producer = std::thread([&, responder] {
      // The rest only after the client has read the first token: a router
      // that buffered would deadlock here (bounded by the latch).
      rest.Wait();
      for (int i = 1; i < 5; ++i)
        responder->Write("data: {\"text\": \"tok" + std::to_string(i) + "\"}\n\n");
      responder->Write("data: [DONE]\n\n");
      responder->Finish();
    });
  };
  Router router(Chat({v1.address()}, {}, 0));
  RawHttp client(router.port, "POST", "/v1/completions", R"({"model": "chat", "stream": true})");
  REQUIRE(client.ReadUntil("tok0"));
  CHECK(client.raw().find("tok1") == std::string::npos);
  CHECK(client.raw().find("text/event-stream") != std::string::npos);
  CHECK(client.raw().find("x-kiln-version: v1") != std::string::npos);
  rest.Open();
  RawResponse r = client.Finish();
  producer.join();
  CHECK(r.status == 200);
  CHECK(r.body.find("tok4") != std::string::npos);
  CHECK(r.body.substr(r.body.size() - 14) == "data: [DONE]\n\n");
  // Tokens are counted from the stream's events.
  CHECK_THAT(router.metrics.Scrape(),
             Catch::Contains(R"(kiln_router_tokens_total{route="default/chat",version="v1"} 5)"));
}

TEST_CASE("a client going away cancels the backend's generation", "[router][proxy]") {
  Backend v1("v1");
  std::atomic<bool> cancelled{false};
  std::shared_ptr<HttpResponder> held;
  v1.stream = [&](const HttpRequest&, std::shared_ptr<HttpResponder> responder) {
    responder->StartStream({200, "text/event-stream"});
    responder->Write("data: {\"text\": \"tok0\"}\n\n");
    responder->OnCancel([&] { cancelled = true; });
    held = responder;  // Generating forever, until cancelled.
  };
  Router router(Chat({v1.address()}, {}, 0));
  {
    RawHttp client(router.port, "POST", "/v1/completions", R"({"model": "chat", "stream": true})");
    REQUIRE(client.ReadUntil("tok0"));
  }  // Hangs up.
  CHECK(WaitFor([&] { return cancelled.load(); }));
  CHECK(WaitFor([&] {
    return router.metrics.Scrape().find(
               R"(kiln_router_client_cancelled_total{route="default/chat",version="v1"} 1)") !=
           std::string::npos;
  }));
}

TEST_CASE("a backend dying mid-stream gives the client a clean error", "[router][proxy]") {
  RawBackend dying([](int fd) {
    SendAll(
        fd,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        "12\r\ndata: {\"t\": \"a\"}\n\n\r\n");
    // Then the process dies: the connection closes with the stream unfinished.
  });
  Router router(Chat({dying.address()}, {}, 0));
  RawResponse r = Post(router.port, R"({"model": "chat", "stream": true})");
  CHECK(r.status == 200);
  CHECK(r.body.find("data: {\"t\": \"a\"}") == 0);
  // The stream ends with an error event naming the failure, then its end.
  const size_t error_at = r.body.find("data: {\"error\"");
  REQUIRE(error_at != std::string::npos);
  json e = json::parse(r.body.substr(error_at + 6));
  CHECK(e["error"]["type"] == "upstream_error");
  CHECK_THAT(
      e["error"]["message"].get<std::string>(),
      Catch::Contains("the backend of version v1 failed") && Catch::Contains(dying.address()));
  CHECK_THAT(router.metrics.Scrape(),
             Catch::Contains(
                 R"(kiln_router_errors_total{kind="reset",route="default/chat",version="v1"} 1)"));
}

TEST_CASE("any other body that breaks is cut off, never ended as if whole", "[router][proxy]") {
  RawBackend dying([](int fd) {
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  });
  Router router(Chat({dying.address()}, {}, 0));
  RawHttp client(router.port);
  REQUIRE(client.Send(RawHttp::Request("POST", "/v1/completions", R"({"model": "chat"})")));
  CHECK(client.ReadToEnd());  // The router closed the connection...
  CHECK(client.raw().find("hello") != std::string::npos);
  CHECK(client.raw().find("0\r\n\r\n") == std::string::npos);  // ...without the last chunk.
}

TEST_CASE("a backend that fails before answering gives 502, one that stalls 504",
          "[router][proxy]") {
  RawBackend closes([](int) {});
  RawBackend garbage([](int fd) { SendAll(fd, "HTTP/1.1 banana\r\n\r\n"); });
  Latch never;
  RawBackend stalls([&](int) { never.Wait(); });
  UpstreamOptions up;
  up.response_timeout = std::chrono::milliseconds(300);
  RouteConfig c = Chat({closes.address()}, {garbage.address()}, 0);
  c.routes.push_back({.name = "default/slow",
                      .models = {"slow"},
                      .versions = {{"v1", "stable", 100, {stalls.address()}}}});
  Router router(c, up);

  RawResponse r = Post(router.port, R"({"model": "chat"})");
  CHECK(r.status == 502);
  CHECK(ErrorCode(r) == "upstream_failed");
  CHECK_THAT(r.body, Catch::Contains(closes.address()));
  r = Post(router.port, R"({"model": "chat"})", {{"x-kiln-version", "v2"}});
  CHECK(r.status == 502);
  CHECK_THAT(r.body, Catch::Contains("malformed response"));
  r = Post(router.port, R"({"model": "slow"})");
  CHECK(r.status == 504);
  CHECK(ErrorCode(r) == "upstream_timeout");
  never.Open();
}

TEST_CASE("replies in one segment, to the connection's end, and cut short are relayed as sent",
          "[router][proxy]") {
  // Several chunks of a stream in one write, and an event cut in two
  // between writes: all of it relayed, in order, and each event counted once.
  RawBackend chunks([](int fd) {
    SendAll(
        fd,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        "8\r\ndata: 1\n\r\n2\r\nda\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    SendAll(fd, "6\r\nta: 2\n\r\nc\r\ndata: [DONE]\r\n0\r\n\r\n");
  });
  // No length and not chunked: the body is whatever comes until the close.
  RawBackend to_close([](int fd) {
    SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil ");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    SendAll(fd, "the end");
  });
  // Fewer bytes than the Content-Length, then the close.
  RawBackend short_body([](int fd) {
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly this");
  });
  RouteConfig c = Chat({chunks.address()}, {to_close.address()}, 0);
  c.routes.push_back({.name = "default/short",
                      .models = {"short"},
                      .versions = {{"v1", "stable", 100, {short_body.address()}}}});
  Router router(c);

  RawResponse r = Post(router.port, R"({"model": "chat"})");
  CHECK(r.status == 200);
  CHECK(r.body == "data: 1\ndata: 2\ndata: [DONE]");
  CHECK_THAT(router.metrics.Scrape(),
             Catch::Contains(R"(kiln_router_tokens_total{route="default/chat",version="v1"} 2)"));
  r = Post(router.port, R"({"model": "chat"})", {{"x-kiln-version", "v2"}});
  CHECK(r.status == 200);
  CHECK(r.body == "until the end");
  RawHttp cut(router.port, "POST", "/v1/completions", R"({"model": "short"})");
  REQUIRE(cut.connected());
  r = cut.Finish();
  // Its length was not reached: the client sees an error, never a whole reply.
  CHECK(r.status == 502);
  CHECK(ErrorCode(r) == "upstream_failed");
}

TEST_CASE("an endpoint that refuses connections is skipped for another", "[router][proxy]") {
  Backend v1("v1");
  const std::string dead = "127.0.0.1:" + std::to_string(FreePort());  // Nothing listens.
  Router router(Chat({dead, v1.address()}, {}, 0));
  for (int i = 0; i < 20; ++i) {
    RawResponse r = Post(router.port, R"({"model": "chat"})");
    REQUIRE(r.status == 200);
  }
  CHECK(v1.requests == 20);
}

TEST_CASE("no version or no ready endpoint gives 503 naming the reason", "[router][proxy]") {
  Backend v1("v1");
  RouteConfig c = Chat({v1.address()}, {}, 0);
  c.routes.push_back({.name = "default/new", .models = {"new"}});
  Router router(c);
  RawResponse r = Post(router.port, R"({"model": "new"})");
  CHECK(r.status == 503);
  CHECK(ErrorCode(r) == "no_version");
  CHECK_THAT(r.body, Catch::Contains("default/new has no serving version yet"));
  r = Post(router.port, R"({"model": "chat"})", {{"x-kiln-version", "canary"}});
  CHECK(r.status == 503);
  CHECK(ErrorCode(r) == "no_endpoints");
  CHECK_THAT(r.body, Catch::Contains("v2 (canary) has no ready endpoint"));
}

TEST_CASE("mirrored copies reach the canary and their answers are discarded", "[router][proxy]") {
  Backend v1("v1"), v2("v2");
  RouteConfig c = Chat({v1.address()}, {v2.address()}, 0);
  c.routes[0].mirror_percent = 100;
  c.routes[0].mirror_version = "v2";
  Router router(c);
  for (int i = 0; i < 30; ++i) {
    RawResponse r = Post(router.port, R"({"model": "chat"})");
    REQUIRE(r.status == 200);
    CHECK(r.headers["x-kiln-backend"] == "v1");
  }
  CHECK(v1.requests == 30);
  CHECK(WaitFor([&] { return v2.requests == 30; }));
  CHECK(WaitFor([&] {
    return router.metrics.Scrape().find(
               R"(kiln_router_mirror_requests_total{result="ok",route="default/chat",version="v2"} 30)") !=
           std::string::npos;
  }));
  // Mirrors are counted apart from the requests.
  CHECK(router.metrics.Scrape().find(
            R"(kiln_router_requests_total{code="200",route="default/chat",version="v2"})") ==
        std::string::npos);
  // And in the window, under the canary's mirrored figures only.
  auto summary = WindowSummary::FromJson(router.metrics.Summary(60));
  REQUIRE(summary.ok());
  const VersionSummary& stable = summary->versions.at({"default/chat", "v1"});
  const VersionSummary& canary = summary->versions.at({"default/chat", "v2"});
  CHECK(stable.requests == 30);
  CHECK(stable.mirrored.requests == 0);
  CHECK(canary.requests == 0);
  CHECK(canary.mirrored.requests == 30);
  CHECK(canary.mirrored.errors == 0);
  CHECK(canary.mirrored.tokens == 30 * 4);  // The replies' usage.completion_tokens.
  CHECK(canary.mirrored.latency.count() == 30);
}

// The window of `router`'s metrics, read back as the operator reads it.
WindowSummary WindowOf(const Router& router) {
  auto summary = WindowSummary::FromJson(router.metrics.Summary(60));
  REQUIRE(summary.ok());
  return *summary;
}

TEST_CASE("a failing mirror is a mirrored error of the canary, never a live one",
          "[router][proxy]") {
  Backend v1("v1");
  // v2's endpoint refuses every connection: each copy fails to connect.
  RouteConfig c = Chat({v1.address()}, {"127.0.0.1:" + std::to_string(FreePort())}, 0);
  c.routes[0].mirror_percent = 100;
  c.routes[0].mirror_version = "v2";
  Router router(c);
  for (int i = 0; i < 10; ++i) {
    RawResponse r = Post(router.port, R"({"model": "chat"})");
    REQUIRE(r.status == 200);  // The client never sees the copy fail.
  }
  CHECK(WaitFor([&] {
    return WindowOf(router).versions[{"default/chat", "v2"}].mirrored.requests == 10;
  }));
  WindowSummary w = WindowOf(router);
  const VersionSummary& stable = w.versions.at({"default/chat", "v1"});
  const VersionSummary& canary = w.versions.at({"default/chat", "v2"});
  CHECK(canary.mirrored.errors == 10);
  CHECK(canary.mirrored.ErrorRate() == 1.0);
  CHECK(canary.requests == 0);
  CHECK(canary.errors == 0);
  CHECK(stable.requests == 10);
  CHECK(stable.errors == 0);
  const std::string text = router.metrics.Scrape();
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(kiln_router_mirror_requests_total{result="connect",route="default/chat",version="v2"} 10)"));
  CHECK_THAT(text, !Catch::Contains("kiln_router_errors_total{"));
}

TEST_CASE("a mirrored stream's first token and tokens are measured", "[router][proxy]") {
  Backend v1("v1"), v2("v2");
  v2.stream = [](const HttpRequest&, std::shared_ptr<HttpResponder> responder) {
    responder->StartStream({200, "text/event-stream"});
    for (int i = 0; i < 3; ++i) responder->Write("data: {\"text\": \"tok\"}\n\n");
    responder->Write("data: [DONE]\n\n");
    responder->Finish();
  };
  RouteConfig c = Chat({v1.address()}, {v2.address()}, 0);
  c.routes[0].mirror_percent = 100;
  c.routes[0].mirror_version = "v2";
  Router router(c);
  for (int i = 0; i < 5; ++i) {
    RawResponse r = Post(router.port, R"({"model": "chat", "stream": true})");
    REQUIRE(r.status == 200);
  }
  CHECK(WaitFor([&] {
    return WindowOf(router).versions[{"default/chat", "v2"}].mirrored.requests == 5;
  }));
  const VersionSummary canary = WindowOf(router).versions.at({"default/chat", "v2"});
  CHECK(canary.mirrored.errors == 0);
  CHECK(canary.mirrored.tokens == 15);
  CHECK(canary.mirrored.first_token.count() == 5);
  CHECK(canary.mirrored.first_token.Quantile(0.99) > 0);
  CHECK(canary.first_token.count() == 0);
}

TEST_CASE("a weight change under load takes effect without a failed request", "[router][proxy]") {
  Backend v1("v1"), v2("v2");
  Router router(Chat({v1.address()}, {v2.address()}, 0));
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0}, done{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      RawHttp client(router.port);
      if (!client.connected()) {
        ++failed;
        return;
      }
      for (int i = 0; i < 5000 && !stop; ++i) {
        if (!client.Send(RawHttp::Request("POST", "/v1/completions", R"({"model": "chat"})"))) {
          ++failed;
          return;
        }
        RawResponse r = client.Next();
        if (r.status != 200) ++failed;
        ++done;
      }
    });
  }
  for (int flip = 1; flip <= 20; ++flip) {
    const int before = done;
    REQUIRE(WaitFor([&] { return done >= before + 20; }));
    REQUIRE(router.proxy
                .SetConfig(Chat({v1.address()}, {v2.address()}, flip % 2 ? 100 : 0,
                                static_cast<uint64_t>(flip) + 1))
                .ok());
    // Every request read after SetConfig returns follows the new weights.
    const int v1_then = v1.requests, v2_then = v2.requests;
    const int at = done;
    REQUIRE(WaitFor([&] { return done >= at + 40; }));
    // In flight at the swap: at most one request per client went the old way.
    if (flip % 2) {
      CHECK(v1.requests - v1_then <= 4);
    } else {
      CHECK(v2.requests - v2_then <= 4);
    }
  }
  stop = true;
  for (std::thread& t : clients) t.join();
  CHECK(failed == 0);
  CHECK(router.proxy.table()->generation() == 21);
}

TEST_CASE("malformed requests get 4xx at once and the router stays up", "[router][proxy]") {
  Backend v1("v1");
  HttpLimits limits;
  limits.max_header_bytes = 8 << 10;
  limits.max_body_bytes = 64 << 10;
  limits.body_idle_timeout = std::chrono::milliseconds(500);
  limits.header_timeout = std::chrono::milliseconds(500);
  Router router(Chat({v1.address()}, {}, 0), {}, limits);

  RawResponse r = Post(router.port, "{not json");
  CHECK(r.status == 400);
  CHECK(ErrorCode(r) == "invalid_json");
  r = Post(router.port, "[1, 2]");
  CHECK(r.status == 400);
  CHECK_THAT(r.body, Catch::Contains("not a JSON object"));
  r = Post(router.port, R"({"model": 7})");
  CHECK(r.status == 400);
  CHECK_THAT(r.body, Catch::Contains("model: must be a string, not number"));
  r = Post(router.port, R"({"model": "gpt-9"})");
  CHECK(r.status == 404);
  CHECK(ErrorCode(r) == "unknown_model");
  r = Post(router.port, R"({"model": "chat"})", {{"x-huge", std::string(16 << 10, 'a')}});
  CHECK(r.status == 431);
  CHECK(r.headers["content-type"] == "application/json");
  r = Post(router.port, R"({"model": "chat", "prompt": ")" + std::string(100 << 10, 'a') + "\"}");
  CHECK(r.status == 413);

  // Slowloris: a body that never finishes, and a head that never ends, are
  // cut off; meanwhile others are served.
  RawHttp slow_body(router.port);
  REQUIRE(slow_body.Send(
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\""));
  RawHttp slow_head(router.port);
  REQUIRE(slow_head.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  CHECK(Post(router.port, R"({"model": "chat"})").status == 200);
  CHECK(slow_body.ReadToEnd());
  CHECK(slow_head.ReadToEnd());
  CHECK(v1.requests == 1);
  CHECK(Post(router.port, R"({"model": "chat"})").status == 200);
}

}  // namespace
}  // namespace kiln::router
