// HttpServer over real sockets on 127.0.0.1: routing, the limits and
// timeouts, keep-alive, streamed responses, peer disconnects, drain, and the
// issue-22 shape of client (hundreds of stalled requests). Every wait is
// bounded; no assertion is about speed, only "answered within a generous
// bound".
#include "base/http_server.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "runtime/health_checks.h"
#include "tests/support/http_probe.h"
#include "tests/support/raw_http.h"
#include "tests/support/wait.h"

namespace kiln {
namespace {

using kiln::runtime::HealthChecks;  // The operator's probes, served here as in the manager.
using kiln::testing::FreePort;
using kiln::testing::Latch;
using kiln::testing::RawHttp;
using kiln::testing::RawResponse;
using kiln::testing::WaitFor;
using Clock = std::chrono::steady_clock;

// Generous bounds: "promptly" on a loaded 2-core machine.
constexpr auto kBound = kiln::testing::kWaitBound;

struct Served {
  std::unique_ptr<HttpServer> server;
  int port = 0;
};

Served Serve(std::vector<HttpRoute> routes, HttpLimits limits = {}) {
  Served s;
  s.port = FreePort();
  auto started = HttpServer::Start(
      {.bind_address = "127.0.0.1:" + std::to_string(s.port), .limits = limits}, std::move(routes));
  REQUIRE(started.ok());
  s.server = std::move(*started);
  return s;
}

RawResponse Call(int port, const std::string& method, const std::string& path,
                 const std::string& body = "") {
  RawHttp h(port, method, path, body);
  REQUIRE(h.connected());
  return h.Finish();
}

HttpRoute Echo(const std::string& path, HttpMatch match = HttpMatch::kExact) {
  return HttpRoute::Get(
      path, [path](const HttpRequest& r) { return HttpReply{.body = path + " " + r.path}; }, match);
}

TEST_CASE("health checks answer like kube-apiserver's", "[runtime][health]") {
  HealthChecks readyz("/readyz");
  bool synced = false;
  readyz.Add("ping", [] { return Status::Ok(); });
  readyz.Add("informers", [&] {
    return synced ? Status::Ok() : Status::Unavailable("caches not synced: pods");
  });
  HttpReply r = readyz.Serve({"/readyz", {}});
  CHECK(r.status == 500);
  CHECK(r.body ==
        "[-]informers failed: caches not synced: pods\n[+]ping ok\nreadyz check failed\n");
  CHECK(readyz.Serve({"/readyz", {{"exclude", "informers"}}}).status == 200);
  CHECK(readyz.Serve({"/readyz/ping", {}}).status == 200);
  CHECK(readyz.Serve({"/readyz/informers", {}}).status == 500);
  CHECK(readyz.Serve({"/readyz/nope", {}}).status == 404);
  synced = true;
  r = readyz.Serve({"/readyz", {}});
  CHECK(r.status == 200);
  CHECK(r.body == "ok");
  CHECK(readyz.Serve({"/readyz", {{"verbose", ""}}}).body ==
        "[+]informers ok\n[+]ping ok\nreadyz check passed\n");
}

TEST_CASE("the HTTP server serves the operator's probes through a library client", "[base][http]") {
  HealthChecks healthz("/healthz");
  healthz.Add("ping", [] { return Status::Ok(); });
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  auto server = HttpServer::Start(
      {.bind_address = address},
      {HttpRoute::Get(
           "/healthz", [&](const HttpRequest& q) { return healthz.Serve(q); }, HttpMatch::kPrefix),
       HttpRoute::Get("/metrics", [](const HttpRequest&) {
         return HttpReply{200, "text/plain; version=0.0.4", "up 1\n"};
       })});
  REQUIRE(server.ok());
  const std::string url = (*server)->url();
  CHECK(url == "http://" + address);
  auto fetch = [&](const std::string& path, const std::string& method = "GET") {
    auto resp = kiln::testing::HttpFetch(url, path, method);
    REQUIRE(resp.ok());
    return *resp;
  };
  auto ok = fetch("/healthz");
  CHECK(ok.status == 200);
  CHECK(ok.body == "ok");
  CHECK(fetch("/healthz/ping").status == 200);
  CHECK(fetch("/healthz?verbose").body.find("[+]ping ok") != std::string::npos);
  CHECK(fetch("/healthz?exclude=ping&verbose=1").body.find("[+]ping excluded") !=
        std::string::npos);
  auto metrics = fetch("/metrics");
  CHECK(metrics.body == "up 1\n");
  CHECK(metrics.headers["content-type"] == "text/plain; version=0.0.4");
  CHECK(fetch("/metricsx").status == 404);
  CHECK(fetch("/healthz", "POST").status == 405);

  // The port is taken while the server runs, free after Drain.
  auto second = HttpServer::Start({.bind_address = address}, {});
  CHECK(second.status().code() == StatusCode::kUnavailable);
  CHECK((*server)->Drain(std::chrono::seconds(5)));
  auto again = HttpServer::Start({.bind_address = address}, {});
  CHECK(again.ok());
}

TEST_CASE("bind addresses and options are checked before listening", "[base][http]") {
  CHECK(ParseBindAddress(":8080")->second == 8080);
  CHECK(ParseBindAddress("[::1]:9090")->first == "[::1]");
  CHECK(ParseBindAddress("8080").status().message().find("want host:port") != std::string::npos);
  CHECK(!ParseBindAddress(":0").ok());
  CHECK(!ParseBindAddress(":65536").ok());
  CHECK(!ParseBindAddress(":80a").ok());
  CHECK(ParseBindAddress("::1:80").status().message().find("brackets") != std::string::npos);
  CHECK(HttpServer::Start({.bind_address = "example.com:8080"}, {}).status().code() ==
        StatusCode::kInvalidArgument);
  auto local = HttpServer::Start({.bind_address = "localhost:" + std::to_string(FreePort())}, {});
  REQUIRE(local.ok());
  CHECK((*local)->url().rfind("http://localhost:", 0) == 0);
  CHECK(
      HttpServer::Start({.bind_address = "127.0.0.1:8080", .io_threads = 0}, {}).status().code() ==
      StatusCode::kInvalidArgument);
  CHECK(HttpServer::Start({.bind_address = "127.0.0.1:8080"}, {Echo("no-slash")}).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("the HTTP server routes by method and path, exact and prefix, and says why it refuses",
          "[base][http]") {
  Served s = Serve(
      {Echo("/a"), Echo("/a/b", HttpMatch::kPrefix), Echo("/p", HttpMatch::kPrefix),
       HttpRoute::Async("POST", "/a", [](const HttpRequest& r, std::shared_ptr<HttpResponder> out) {
         out->Reply({.body = "posted " + r.body});
       })});
  CHECK(Call(s.port, "GET", "/a").body == "/a /a");
  CHECK(Call(s.port, "POST", "/a", "x").body == "posted x");
  CHECK(Call(s.port, "GET", "/a/b/c").body == "/a/b /a/b/c");  // The longest prefix wins.
  CHECK(Call(s.port, "GET", "/p/q%20r?k=v").body == "/p /p/q r");
  CHECK(Call(s.port, "GET", "/p").body == "/p /p");
  RawResponse head = Call(s.port, "HEAD", "/a");
  CHECK(head.status == 200);
  CHECK(head.headers["content-length"] == "5");
  CHECK(head.body.empty());
  RawResponse missing = Call(s.port, "GET", "/a/x");  // Exact: no prefix match.
  CHECK(missing.status == 404);
  CHECK(missing.body == "not found: /a/x\n");
  CHECK(Call(s.port, "GET", "/px").status == 404);
  RawResponse wrong = Call(s.port, "DELETE", "/a");
  CHECK(wrong.status == 405);
  CHECK(wrong.headers["allow"] == "GET, HEAD, POST");
  CHECK_THAT(wrong.body, Catch::Contains("method DELETE not allowed on /a"));
  CHECK(wrong.headers["x-content-type-options"] == "nosniff");
}

TEST_CASE("a header value cannot end the response header early", "[base][http]") {
  Served s = Serve({HttpRoute::Get("/h", [](const HttpRequest& r) {
    return HttpReply{.body = "ok", .headers = {{"X-Echo", r.Header("x-in") + "\r\nX-Evil: 1"}}};
  })});
  RawHttp h(s.port);
  REQUIRE(h.Send("GET /h HTTP/1.1\r\nHost: x\r\nX-In: a\r\n\r\n"));
  RawResponse r = h.Next();
  CHECK(r.headers["x-echo"] == "aX-Evil: 1");
  CHECK(r.headers.count("x-evil") == 0);
  CHECK(r.body == "ok");
}

TEST_CASE("the HTTP server refuses oversized and malformed requests with 431, 413 and 400",
          "[base][http]") {
  HttpLimits limits;
  limits.max_header_bytes = 1024;
  limits.max_body_bytes = 100;
  Served s = Serve({HttpRoute::Async("POST", "/echo",
                                     [](const HttpRequest& r, std::shared_ptr<HttpResponder> out) {
                                       out->Reply({.body = r.body});
                                     })},
                   limits);
  RawResponse big_header = [&] {
    RawHttp h(s.port);
    REQUIRE(
        h.Send("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n"));
    return h.Finish();
  }();
  CHECK(big_header.status == 431);
  CHECK_THAT(big_header.body, Catch::Contains("over 1024 bytes"));
  RawResponse big_body = Call(s.port, "POST", "/echo", std::string(101, 'b'));
  CHECK(big_body.status == 413);
  CHECK_THAT(big_body.body, Catch::Contains("request body too large: over 100 bytes"));
  CHECK(big_body.headers["connection"] == "close");
  // Chunked: the limit holds as the body arrives.
  RawResponse big_chunks = [&] {
    RawHttp h(s.port);
    REQUIRE(
        h.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "40\r\n" +
               std::string(64, 'c') + "\r\n40\r\n" + std::string(64, 'c') + "\r\n0\r\n\r\n"));
    return h.Finish();
  }();
  CHECK(big_chunks.status == 413);
  RawResponse malformed = [&] {
    RawHttp h(s.port);
    REQUIRE(h.Send("GET /echo HTTP/1.1\r\nHost x\r\n\r\n"));
    return h.Finish();
  }();
  CHECK(malformed.status == 400);
  CHECK_THAT(malformed.body, Catch::Contains("malformed request"));
  CHECK(Call(s.port, "POST", "/echo", std::string(100, 'd')).body == std::string(100, 'd'));
}

TEST_CASE("the HTTP server keeps connections alive and answers pipelined requests in order",
          "[base][http]") {
  Served s = Serve({Echo("/a"), Echo("/b")});
  RawHttp h(s.port);
  REQUIRE(h.Send(RawHttp::Request("GET", "/a")));
  RawResponse first = h.Next();
  CHECK(first.body == "/a /a");
  CHECK(first.headers.count("connection") == 0);
  REQUIRE(h.Send(RawHttp::Request("GET", "/b") + RawHttp::Request("GET", "/a")));
  CHECK(h.Next().body == "/b /b");
  CHECK(h.Next().body == "/a /a");
  CHECK(s.server->stats().connections == 1);
  REQUIRE(h.Send(RawHttp::Request("GET", "/b", "", {}, /*keep_alive=*/false)));
  RawResponse last = h.Next();
  CHECK(last.body == "/b /b");
  CHECK(last.headers["connection"] == "close");
  CHECK(h.ReadToEnd());
}

TEST_CASE("the HTTP server closes connections that stall in the header, the body or idle",
          "[base][http]") {
  HttpLimits limits;
  limits.header_timeout = std::chrono::milliseconds(300);
  limits.body_idle_timeout = std::chrono::milliseconds(300);
  limits.body_timeout = std::chrono::seconds(1);
  limits.keep_alive_timeout = std::chrono::milliseconds(300);
  Served s = Serve(
      {Echo("/a"), HttpRoute::Async("POST", "/a",
                                    [](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                      out->Reply({.body = "posted"});
                                    })},
      limits);
  RawHttp header(s.port), body(s.port), slow_body(s.port), idle(s.port), silent(s.port);
  REQUIRE(header.Send("GET /a HTTP/1.1\r\nHost: x\r\n"));
  REQUIRE(body.Send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"));
  REQUIRE(slow_body.Send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"));
  REQUIRE(idle.Send(RawHttp::Request("GET", "/a")));
  CHECK(idle.Next().status == 200);
  // A body that trickles in faster than the idle timeout still meets the
  // total one.
  std::thread trickle([&] {
    for (int i = 0; i < 40 && slow_body.Send("y"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const auto start = Clock::now();
  CHECK(header.ReadToEnd());
  CHECK(body.ReadToEnd());
  CHECK(idle.ReadToEnd());
  CHECK(silent.ReadToEnd());  // Connected and never sent a byte.
  CHECK(slow_body.ReadToEnd());
  trickle.join();
  CHECK(Clock::now() - start < kBound);
  CHECK(header.raw().empty());  // Closed without a reply.
  CHECK(slow_body.raw().empty());
  CHECK(WaitFor([&] { return s.server->stats().connections == 0; }));
  CHECK(Call(s.port, "GET", "/a").status == 200);
}

TEST_CASE("a streamed response arrives chunk by chunk", "[base][http]") {
  Latch first_read, second_read;
  std::thread producer;
  Served s = Serve({HttpRoute::Async(
      "GET", "/events", [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
        producer = std::thread([&, out] {
          out->StartStream({.content_type = "text/event-stream", .body = "data: one\n\n"});
          first_read.Wait();  // The client has the first chunk before the second exists.
          out->Write("data: two\n\n");
          second_read.Wait();
          out->Write("data: three\n\n");
          out->Finish();
        });
      })});
  RawHttp h(s.port, "GET", "/events");
  REQUIRE(h.ReadUntil("data: one"));
  CHECK(h.raw().find("data: two") == std::string::npos);
  first_read.Open();
  REQUIRE(h.ReadUntil("data: two"));
  CHECK(h.raw().find("data: three") == std::string::npos);
  second_read.Open();
  RawResponse r = h.Finish();
  producer.join();
  CHECK(r.status == 200);
  CHECK(r.headers["transfer-encoding"] == "chunked");
  CHECK(r.headers["content-type"] == "text/event-stream");
  CHECK(r.body == "data: one\n\ndata: two\n\ndata: three\n\n");
}

TEST_CASE("streams written from another thread all arrive, connection after connection",
          "[base][http]") {
  // As kiln-worker serve answers: one engine thread writes every stream while
  // the loops serve the connections, each new connection on the next loop.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<HttpResponder>> queue;
  bool stop = false;
  std::thread engine([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;
      std::shared_ptr<HttpResponder> out = std::move(queue.front());
      queue.erase(queue.begin());
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(300));  // A prefill.
      out->StartStream({.content_type = "text/event-stream"});
      for (int i = 0; i < 8; ++i) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // A token.
        out->Write("data: " + std::to_string(i) + "\n\n");
      }
      out->Write("data: [DONE]\n\n");
      out->Finish();
      lock.lock();
    }
  });
  Served s = Serve({HttpRoute::Async("POST", "/v1/completions",
                                     [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                       std::lock_guard<std::mutex> lock(mu);
                                       queue.push_back(std::move(out));
                                       cv.notify_one();
                                     })});
  int complete = 0;
  for (int i = 0; i < 300; ++i) {
    RawHttp h(s.port, "POST", "/v1/completions", R"({"stream": true})");
    h.SetReadTimeout(std::chrono::seconds(5));
    RawResponse r = h.Finish();
    if (r.status != 200 || r.body.find("data: [DONE]") == std::string::npos) break;
    ++complete;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_one();
  engine.join();
  CHECK(complete == 300);
}

TEST_CASE("an aborted stream sends what it has, then closes without the last chunk",
          "[base][http]") {
  // What the responder's calls returned, checked here: Catch's CHECK is not
  // thread-safe, and the handler runs on an I/O thread (TSan said so).
  std::atomic<int> wrote{-1}, aborted{-1}, after{-1};
  Served s = Serve({HttpRoute::Async(
      "GET", "/events", [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
        out->StartStream({.content_type = "application/octet-stream", .body = "part one"});
        wrote = out->Write("part two");
        aborted = out->Abort();
        after = out->Write("never") || out->Finish();
      })});
  RawHttp h(s.port);
  REQUIRE(h.Send(RawHttp::Request("GET", "/events")));  // Kept alive: the abort closes it.
  CHECK(h.ReadToEnd());
  REQUIRE(WaitFor([&] { return after.load() >= 0; }));
  CHECK(wrote == 1);
  CHECK(aborted == 1);
  CHECK(after == 0);  // Neither a write nor a finish after the abort.
  CHECK(h.raw().find("8\r\npart one\r\n8\r\npart two\r\n") != std::string::npos);
  CHECK(h.raw().find("0\r\n\r\n") == std::string::npos);
  CHECK(h.raw().find("never") == std::string::npos);
}

TEST_CASE("a peer that goes away cancels its responder, streamed or not", "[base][http]") {
  std::mutex mu;
  std::vector<std::shared_ptr<HttpResponder>> held;
  std::atomic<int> cancelled{0};
  auto hold = [&](bool stream) {
    return [&, stream](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
      if (stream) out->StartStream({.body = "started\n"});
      out->OnCancel([&] { ++cancelled; });
      std::lock_guard<std::mutex> lock(mu);
      held.push_back(std::move(out));
    };
  };
  Served s = Serve({HttpRoute::Async("GET", "/stream", hold(true)),
                    HttpRoute::Async("GET", "/whole", hold(false))});
  {
    RawHttp stream(s.port, "GET", "/stream");
    REQUIRE(stream.ReadUntil("started"));
    RawHttp whole(s.port, "GET", "/whole");
    REQUIRE(WaitFor([&] {
      std::lock_guard<std::mutex> lock(mu);
      return held.size() == 2;
    }));
    CHECK(s.server->stats().handling == 2);
  }  // Both hang up without a write from the server.
  REQUIRE(WaitFor([&] { return cancelled == 2; }));
  std::lock_guard<std::mutex> lock(mu);
  for (auto& out : held) {
    CHECK(out->cancelled());
    CHECK_FALSE(out->Write("more"));
    CHECK_FALSE(out->Reply({}));
  }
  int late = 0;
  held[0]->OnCancel([&] { ++late; });  // Registered after the fact: runs at once.
  CHECK(late == 1);
  CHECK(WaitFor([&] { return s.server->stats().connections == 0; }));
  CHECK(s.server->stats().handling == 0);
}

TEST_CASE("a stream to a peer that stops reading is cut once its backlog is over the limit",
          "[base][http]") {
  HttpLimits limits;
  limits.max_stream_backlog = 1 << 20;
  std::atomic<int> written{0};
  std::atomic<bool> refused{false};
  std::thread producer;
  Served s =
      Serve({HttpRoute::Async("GET", "/flood",
                              [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                producer = std::thread([&, out] {
                                  out->StartStream({});
                                  // At most 256 MiB; the kernel's socket
                                  // buffers take a few MiB of it.
                                  for (int i = 0; i < 1024 && !refused; ++i) {
                                    if (!out->Write(std::string(256 << 10, 'x'))) {
                                      refused = true;
                                    } else {
                                      ++written;
                                      std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                    }
                                  }
                                });
                              })},
            limits);
  RawHttp h(s.port, "GET", "/flood");  // Never reads.
  REQUIRE(WaitFor([&] { return refused.load(); }));
  producer.join();
  CHECK(written < 1024);
  CHECK(WaitFor([&] { return s.server->stats().connections == 0; }));
}

TEST_CASE("a responder dropped without an answer replies 500, and so does a throwing handler",
          "[base][http]") {
  Served s = Serve(
      {HttpRoute::Async("GET", "/drop", [](const HttpRequest&, std::shared_ptr<HttpResponder>) {}),
       HttpRoute::Get("/throw",
                      [](const HttpRequest&) -> HttpReply { throw std::runtime_error("boom"); })});
  RawResponse dropped = Call(s.port, "GET", "/drop");
  CHECK(dropped.status == 500);
  CHECK_THAT(dropped.body, Catch::Contains("gave no reply"));
  RawResponse threw = Call(s.port, "GET", "/throw");
  CHECK(threw.status == 500);
  CHECK_THAT(threw.body, Catch::Contains("boom"));
}

TEST_CASE("drain lets in-flight requests finish, cuts the rest at the deadline, and ends in time",
          "[base][http]") {
  Latch release;
  std::thread finisher;
  std::shared_ptr<HttpResponder> stuck;
  std::atomic<bool> stuck_cancelled{false};
  Served s = Serve({Echo("/a"),
                    HttpRoute::Async("GET", "/slow",
                                     [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                       finisher = std::thread([&, out] {
                                         release.Wait();
                                         out->Reply({.body = "finished"});
                                       });
                                     }),
                    HttpRoute::Async("GET", "/never",
                                     [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                       out->OnCancel([&] { stuck_cancelled = true; });
                                       stuck = std::move(out);
                                     })});
  RawHttp idle(s.port);
  REQUIRE(idle.Send(RawHttp::Request("GET", "/a")));
  REQUIRE(idle.Next().status == 200);
  RawHttp slow(s.port, "GET", "/slow");
  RawHttp never(s.port, "GET", "/never");
  RawHttp stalled(s.port);
  REQUIRE(stalled.Send("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx"));
  REQUIRE(WaitFor([&] { return s.server->stats().handling == 2; }));

  std::atomic<bool> drained{false}, all_finished{true};
  const auto start = Clock::now();
  std::thread drainer([&] {
    all_finished = s.server->Drain(std::chrono::seconds(2));
    drained = true;
  });
  CHECK(idle.ReadToEnd());  // Idle connections close at once.
  CHECK(WaitFor([&] { return s.server->stats().draining; }));
  release.Open();
  RawResponse finished = slow.Finish();
  CHECK(finished.status == 200);
  CHECK(finished.body == "finished");
  CHECK(finished.headers["connection"] == "close");
  drainer.join();
  const auto took = Clock::now() - start;
  finisher.join();
  CHECK(drained);
  CHECK_FALSE(all_finished);  // "never" and the stalled upload were cut.
  CHECK(took >= std::chrono::milliseconds(1800));
  CHECK(took < kBound);
  CHECK(stuck_cancelled);
  CHECK(never.ReadToEnd());
  CHECK(stalled.ReadToEnd());
  CHECK_FALSE(RawHttp(s.port).connected());                  // No longer listening.
  CHECK(s.server->Drain(std::chrono::seconds(5)) == false);  // Again: at once, same answer.
}

TEST_CASE("at the connection limit the longest-waiting reader is reclaimed, not a handled request",
          "[base][http]") {
  HttpLimits limits;
  limits.max_connections = 8;
  Latch release;
  std::thread finisher;
  Served s = Serve(
      {Echo("/a"), HttpRoute::Async("GET", "/busy",
                                    [&](const HttpRequest&, std::shared_ptr<HttpResponder> out) {
                                      finisher = std::thread([&, out] {
                                        release.Wait();
                                        out->Reply({.body = "done"});
                                      });
                                    })},
      limits);
  RawHttp busy(s.port, "GET", "/busy");
  REQUIRE(WaitFor([&] { return s.server->stats().handling == 1; }));
  std::vector<std::unique_ptr<RawHttp>> stalled;
  for (int i = 0; i < 7; ++i) {
    stalled.push_back(std::make_unique<RawHttp>(s.port));
    REQUIRE(stalled.back()->Send("GET /a HTTP/1.1\r\n"));
    REQUIRE(WaitFor([&] { return s.server->stats().connections == i + 2; }));
  }
  // Full: each complete request costs the oldest stalled reader its place.
  for (size_t i = 0; i < 3; ++i) {
    RawResponse r = Call(s.port, "GET", "/a");
    CHECK(r.status == 200);
    CHECK(stalled[i]->ReadToEnd());
    // The finished request's connection must be gone before the next one
    // arrives, or the server, still full, reclaims another stalled reader.
    REQUIRE(WaitFor([&] { return s.server->stats().connections == 7; }));
    stalled.push_back(std::make_unique<RawHttp>(s.port));  // Full again.
    REQUIRE(stalled.back()->Send("GET /a HTTP/1.1\r\n"));
    REQUIRE(WaitFor([&] { return s.server->stats().connections == 8; }));
  }
  release.Open();
  CHECK(busy.Finish().body == "done");
  finisher.join();
}

TEST_CASE("issue 22: hundreds of stalled uploads neither starve requests nor hold the drain",
          "[base][http]") {
  std::atomic<bool> ready{true};
  Served s = Serve({HttpRoute::Get("/readyz",
                                   [&](const HttpRequest&) {
                                     return ready ? HttpReply{.body = "ok"}
                                                  : HttpReply{.status = 503, .body = "draining"};
                                   }),
                    HttpRoute::Async("POST", "/v1/completions",
                                     [](const HttpRequest& r, std::shared_ptr<HttpResponder> out) {
                                       out->Reply({.body = "completed " + r.body});
                                     })});
  auto stall = [&](int n) {
    std::vector<std::unique_ptr<RawHttp>> clients;
    for (int i = 0; i < n; ++i) {
      clients.push_back(std::make_unique<RawHttp>(s.port));
      REQUIRE(clients.back()->Send(
          "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"));
    }
    REQUIRE(WaitFor([&] { return s.server->stats().connections >= n; }));
    return clients;
  };
  {
    auto stalled = stall(200);
    RawResponse r = Call(s.port, "POST", "/v1/completions", "{}");
    CHECK(r.status == 200);
    CHECK(r.body == "completed {}");
    CHECK(Call(s.port, "GET", "/readyz").status == 200);
  }
  // Gone: their connections close and readiness answers at once.
  CHECK(WaitFor([&] { return s.server->stats().connections == 0; }));
  CHECK(Call(s.port, "GET", "/readyz").status == 200);
  // A drain with 200 stalled uploads still ends by its deadline.
  auto stalled = stall(200);
  const auto start = Clock::now();
  ready = false;
  CHECK_FALSE(s.server->Drain(std::chrono::milliseconds(500)));
  CHECK(Clock::now() - start < kBound);
  for (auto& c : stalled) CHECK(c->ReadToEnd());
}

}  // namespace
}  // namespace kiln
