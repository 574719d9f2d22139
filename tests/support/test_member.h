// TestMember: a fleet::Member for controller unit tests, its client talking
// to a FakeApiServer (no rate limit, no retries) and its caches FakeReaders
// the test fills. Probes always succeed. Thread-safe as its parts are.
#ifndef KILN_TESTS_SUPPORT_TEST_MEMBER_H_
#define KILN_TESTS_SUPPORT_TEST_MEMBER_H_

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "base/clock.h"
#include "kube/client.h"
#include "operator/fleet/member.h"
#include "runtime/fake_reader.h"
#include "tests/support/fake_api_server.h"

namespace kiln::testing {

class TestMember final : public fleet::Member {
 public:
  // `api` must outlive this.
  TestMember(std::string name, FakeApiServer& api)
      : name_(std::move(name)),
        client_(kube::RestConfig{.server = "https://fake"},
                kube::ClientOptions{.qps = 0, .max_retries = 0}, api.Transport(),
                RealClock::Get()) {}
  const std::string& name() const override { return name_; }
  kube::Client& client() override { return client_; }
  const runtime::Reader& nodes() const override { return nodes_; }
  const runtime::Reader& pods() const override { return pods_; }
  Status Probe(std::chrono::milliseconds) override { return Status::Ok(); }
  std::string version() const override { return "v1.33.0"; }
  Status CachesSynced() const override { return Status::Ok(); }
  void Stop() override {}

  runtime::FakeReader nodes_;
  runtime::FakeReader pods_;

 private:
  std::string name_;
  kube::Client client_;
};

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_TEST_MEMBER_H_
