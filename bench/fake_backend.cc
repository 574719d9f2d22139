// fake_backend: a stand-in for `kiln-worker serve` in the router benchmark:
// the same OpenAI-style paths, answered at once with a small JSON reply, or,
// for "stream": true, as an SSE stream of --chunks events --chunk-interval
// apart then "data: [DONE]". Each reply names --name (the version) in its
// body and in an x-kiln-backend header, so a benchmark can count who
// answered. On kiln's one HTTP server (base/http_server.h); stops on SIGTERM.
//
//   fake_backend --listen 127.0.0.1:9001 --name v1 [--chunks 8] [--chunk-interval 5ms]
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/flags.h"
#include "base/http_server.h"
#include "base/stop_signal.h"

namespace {

using Clock = std::chrono::steady_clock;

// Sends the streams' chunks on time from one thread, so no I/O thread sleeps.
class Streamer {
 public:
  Streamer(int chunks, std::chrono::milliseconds interval, std::string name)
      : chunks_(chunks), interval_(interval), name_(std::move(name)), thread_([this] { Run(); }) {}
  ~Streamer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void Add(std::shared_ptr<kiln::HttpResponder> responder) {
    kiln::HttpReply head;
    head.content_type = "text/event-stream";
    head.headers = {{"x-kiln-backend", name_}, {"cache-control", "no-cache"}};
    if (!responder->StartStream(std::move(head))) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push({Clock::now(), 0, std::move(responder)});
    }
    cv_.notify_one();
  }

 private:
  struct Stream {
    Clock::time_point due;
    int sent = 0;
    std::shared_ptr<kiln::HttpResponder> responder;
    bool operator>(const Stream& o) const { return due > o.due; }
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (queue_.top().due > Clock::now()) {
        cv_.wait_until(lock, queue_.top().due);
        continue;
      }
      Stream s = queue_.top();
      queue_.pop();
      lock.unlock();
      bool more = false;
      if (s.sent < chunks_) {
        nlohmann::json event = {
            {"object", "text_completion"},
            {"model", name_},
            {"choices", {{{"index", 0}, {"text", " tok" + std::to_string(s.sent)}}}}};
        more = s.responder->Write("data: " + event.dump() + "\n\n");
        ++s.sent;
      } else {
        s.responder->Write("data: [DONE]\n\n");
        s.responder->Finish();
      }
      lock.lock();
      if (more) {
        s.due = Clock::now() + interval_;
        queue_.push(std::move(s));
      }
    }
  }

  const int chunks_;
  const std::chrono::milliseconds interval_;
  const std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Stream, std::vector<Stream>, std::greater<>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:9001", name = "v1";
  int chunks = 8, io_threads = 1;
  std::chrono::milliseconds interval(5);
  kiln::FlagSet flags("fake_backend", "Usage: fake_backend [flags]\nA fake kiln-worker serve.");
  flags.String("listen", &listen, "Address to serve on.");
  flags.String("name", &name, "The version this backend plays; in every reply.");
  flags.Int("chunks", &chunks, 0, 100000, "Events in a streamed reply.");
  flags.Duration("chunk-interval", &interval, std::chrono::milliseconds(0),
                 "Time between streamed events.");
  flags.Int("io-threads", &io_threads, 1, 64, "The HTTP server's I/O threads.");
  if (auto code = flags.ParseOrExit(argc, argv, 1)) return *code;

  kiln::StopSignal& stop = kiln::StopSignal::Install();
  Streamer streamer(chunks, interval, name);
  const std::string reply_body =
      nlohmann::json{{"object", "text_completion"},
                     {"model", name},
                     {"choices", {{{"index", 0}, {"text", " a short fake completion"}}}},
                     {"usage", {{"prompt_tokens", 4}, {"completion_tokens", 5}}}}
          .dump();
  auto complete = [&](const kiln::HttpRequest& req,
                      std::shared_ptr<kiln::HttpResponder> responder) {
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      responder->Reply({400, "application/json", R"({"error":{"message":"bad JSON"}})"});
      return;
    }
    if (body.value("stream", false)) {
      streamer.Add(std::move(responder));
      return;
    }
    responder->Reply({200, "application/json", reply_body, {{"x-kiln-backend", name}}});
  };
  kiln::HttpServerOptions options;
  options.bind_address = listen;
  options.io_threads = io_threads;
  auto server = kiln::HttpServer::Start(
      options, {kiln::HttpRoute::Async("POST", "/v1/completions", complete),
                kiln::HttpRoute::Async("POST", "/v1/chat/completions", complete),
                kiln::HttpRoute::Get("/readyz", [](const kiln::HttpRequest&) {
                  return kiln::HttpReply{200, "text/plain", "ok\n"};
                })});
  if (!server.ok()) {
    std::fprintf(stderr, "fake_backend: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("fake_backend %s serving on %s\n", name.c_str(), (*server)->url().c_str());
  std::fflush(stdout);
  while (!stop.WaitFor(std::chrono::seconds(1))) {
  }
  (*server)->Drain(std::chrono::seconds(2));
  return 0;
}
