// FakeTransport: an HttpTransport that records requests and answers from a
// script of responses or errors, for unit tests of the client; streams
// (watches) answer from a script of bodies, and without one wait until
// cancelled. Thread-safe.
#ifndef KILN_TESTS_KUBE_FAKE_TRANSPORT_H_
#define KILN_TESTS_KUBE_FAKE_TRANSPORT_H_

#include <chrono>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "kube/http.h"

namespace kiln::kube::testing {

class FakeTransport final : public HttpTransport {
 public:
  // Queues the answer to the next request.
  void Respond(int status, std::string body, std::map<std::string, std::string> headers = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back(HttpResponse{status, std::move(headers), std::move(body)});
  }
  void Fail(Status error) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back(std::move(error));
  }

  StatusOr<HttpResponse> Do(const HttpRequest& request) override {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(request);
    if (script_.empty()) return Status::Internal("FakeTransport: unexpected " + request.path);
    StatusOr<HttpResponse> next = std::move(script_.front());
    script_.pop_front();
    return next;
  }

  // Queues the body (e.g. newline-delimited watch events) of the next stream,
  // which then ends normally.
  void RespondStream(std::string body) {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(std::move(body));
  }

  Status Stream(const HttpRequest& request, const std::function<void(const HttpResponse&)>& on_head,
                const std::function<bool(std::string_view)>& on_chunk,
                const std::atomic<bool>* cancel) override {
    std::string body;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(request);
      if (!streams_.empty()) {
        body = std::move(streams_.front());
        streams_.pop_front();
      }
    }
    on_head(HttpResponse{200, {}, ""});
    if (!body.empty()) {
      on_chunk(body);
      return Status::Ok();
    }
    while (cancel == nullptr || !cancel->load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::lock_guard<std::mutex> lock(mu_);
      if (!streams_.empty()) return Status::Ok();  // The next watch takes it.
    }
    return Status::Ok();
  }

  std::vector<HttpRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return script_.size();
  }

 private:
  std::mutex mu_;
  std::deque<StatusOr<HttpResponse>> script_;
  std::deque<std::string> streams_;
  std::vector<HttpRequest> requests_;
};

}  // namespace kiln::kube::testing

#endif  // KILN_TESTS_KUBE_FAKE_TRANSPORT_H_
