// FakeTransport: an HttpTransport that records requests and answers from a
// script of responses or errors, for unit tests of the client. Thread-safe.
#ifndef KILN_TESTS_OPERATOR_KUBE_FAKE_TRANSPORT_H_
#define KILN_TESTS_OPERATOR_KUBE_FAKE_TRANSPORT_H_

#include <deque>
#include <mutex>
#include <vector>

#include "operator/kube/http.h"

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

  Status Stream(const HttpRequest&, const std::function<void(const HttpResponse&)>&,
                const std::function<bool(std::string_view)>&, const std::atomic<bool>*) override {
    return Status::FailedPrecondition("FakeTransport does not stream");
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
  std::vector<HttpRequest> requests_;
};

}  // namespace kiln::kube::testing

#endif  // KILN_TESTS_OPERATOR_KUBE_FAKE_TRANSPORT_H_
