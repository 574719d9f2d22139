// serve_load: a closed-loop load generator for `kiln-worker serve`. C clients
// each send streaming completions back to back over loopback until the
// request budget or the time limit runs out, and it prints aggregate
// generated tokens/s, time to first token (p50, p99) and request latency
// (p50, p99).
//
//   serve_load [--tokens-metric NAME] PORT CLIENTS [REQUESTS=64] [MAX_TOKENS=64]
//              [SECONDS=60] [PROMPT]
//
// Tokens are the server's own count, the counter NAME in its /metrics read
// before and after (kiln_serve_generation_tokens_total by default; llama.cpp's
// server with --metrics: llamacpp:tokens_predicted_total): stream chunks
// undercount, since text that ends inside a UTF-8 character is held back and
// sent with the next token. The requests are OpenAI completions with
// temperature 0.8 and ignore_eos (both kiln and llama.cpp's server take it),
// so every request runs to MAX_TOKENS.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  double ttft = 0, latency = 0;
  int chunks = 0;
  bool ok = false;
};

// One streaming request; times the first "data: {" and the end of the stream.
Sample Request(int port, const std::string& body) {
  Sample s;
  const auto start = Clock::now();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{120, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return s;
  }
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return s;
  }
  std::string got;
  char buf[8192];
  size_t scanned = 0;
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    for (size_t at; (at = got.find("data: {", scanned)) != std::string::npos;) {
      if (s.chunks++ == 0) s.ttft = std::chrono::duration<double>(Clock::now() - start).count();
      scanned = at + 7;
    }
  }
  close(fd);
  s.latency = std::chrono::duration<double>(Clock::now() - start).count();
  s.ok = got.rfind("HTTP/1.1 200", 0) == 0 && got.find("data: [DONE]") != std::string::npos;
  if (s.chunks > 0) --s.chunks;  // The final chunk carries only the finish reason.
  return s;
}

// The server's counter `metric` (a sample without labels), or -1.
double GeneratedTokens(int port, const std::string& metric) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string got;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[8192];
      for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;)
        got.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  const std::string key = "\n" + metric + " ";
  const size_t at = got.find(key);
  return at == std::string::npos ? -1 : std::atof(got.c_str() + at + key.size());
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  std::string metric = "kiln_serve_generation_tokens_total";
  if (argc > 2 && std::string(argv[1]) == "--tokens-metric") {
    metric = argv[2];
    argv[2] = argv[0];
    argc -= 2;
    argv += 2;
  }
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: serve_load [--tokens-metric NAME] PORT CLIENTS [REQUESTS=64] "
                 "[MAX_TOKENS=64] [SECONDS=60] [PROMPT]\n");
    return 2;
  }
  const int port = std::atoi(argv[1]), clients = std::atoi(argv[2]);
  const int requests = argc > 3 ? std::atoi(argv[3]) : 64;
  const int max_tokens = argc > 4 ? std::atoi(argv[4]) : 64;
  const double seconds = argc > 5 ? std::atof(argv[5]) : 60;
  const std::string prompt = argc > 6 ? argv[6] : "Once upon a time, ";
  const std::string body = "{\"prompt\": \"" + prompt +
                           "\", \"max_tokens\": " + std::to_string(max_tokens) +
                           ", \"temperature\": 0.8, \"stream\": true, \"ignore_eos\": true}";
  const double tokens_before = GeneratedTokens(port, metric);
  std::atomic<int> issued{0};
  std::mutex mu;
  std::vector<Sample> samples;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      while (issued.fetch_add(1) < requests && Clock::now() < deadline) {
        Sample s = Request(port, body);
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(s);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const double generated = GeneratedTokens(port, metric) - tokens_before;
  std::vector<double> ttft, latency;
  long chunks = 0;
  int failed = 0;
  for (const auto& s : samples) {
    if (!s.ok) {
      ++failed;
      continue;
    }
    ttft.push_back(s.ttft);
    latency.push_back(s.latency);
    chunks += s.chunks;
  }
  std::printf(
      "{\"clients\": %d, \"requests\": %zu, \"failed\": %d, \"maxTokens\": %d, \"seconds\": %.2f, "
      "\"tokens\": %.0f, \"chunks\": %ld, \"tokensPerSecond\": %.1f, \"ttftP50Ms\": %.1f, "
      "\"ttftP99Ms\": %.1f, "
      "\"latencyP50Ms\": %.1f, \"latencyP99Ms\": %.1f}\n",
      clients, samples.size(), failed, max_tokens, wall, generated, chunks, generated / wall,
      Percentile(ttft, 0.5) * 1e3, Percentile(ttft, 0.99) * 1e3, Percentile(latency, 0.5) * 1e3,
      Percentile(latency, 0.99) * 1e3);
  return failed == 0 ? 0 : 1;
}
