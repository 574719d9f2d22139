// FakeCluster: a kube::Client over a FakeTransport, scripted to answer an
// informer's list and watches, so unit tests run real informers without an
// API server. Thread-safe as FakeTransport.
#ifndef KILN_TESTS_RUNTIME_FAKE_CLUSTER_H_
#define KILN_TESTS_RUNTIME_FAKE_CLUSTER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "kube/client.h"
#include "tests/kube/fake_transport.h"

namespace kiln::runtime::testing {

struct FakeCluster {
  FakeCluster() {
    auto t = std::make_unique<kube::testing::FakeTransport>();
    transport = t.get();
    client = std::make_unique<kube::Client>(kube::RestConfig{.server = "https://127.0.0.1:6443"},
                                            kube::ClientOptions{}, std::move(t), RealClock::Get());
  }

  // Answers the next list with `items` at resourceVersion "1".
  void ListReturns(const std::vector<nlohmann::json>& items) {
    transport->Respond(
        200, nlohmann::json{{"items", items}, {"metadata", {{"resourceVersion", "1"}}}}.dump());
  }
  // Sends (type, object) watch events on the next watch.
  void WatchSends(const std::vector<std::pair<std::string, nlohmann::json>>& events) {
    std::string body;
    for (const auto& [type, obj] : events) {
      body += nlohmann::json{{"type", type}, {"object", obj}}.dump() + "\n";
    }
    transport->RespondStream(body);
  }

  kube::testing::FakeTransport* transport;
  std::unique_ptr<kube::Client> client;
};

// A namespaced object with labels and, optionally, ownerReferences.
inline nlohmann::json Obj(const std::string& ns, const std::string& name,
                          nlohmann::json labels = nlohmann::json::object(),
                          nlohmann::json owners = nullptr, const std::string& rv = "1") {
  if (labels.is_null()) labels = nlohmann::json::object();  // `{}` converts to null.
  nlohmann::json o = {
      {"metadata", {{"name", name}, {"labels", std::move(labels)}, {"resourceVersion", rv}}}};
  if (!ns.empty()) o["metadata"]["namespace"] = ns;
  if (!owners.is_null()) o["metadata"]["ownerReferences"] = std::move(owners);
  return o;
}

// An ownerReference.
inline nlohmann::json OwnerRef(const std::string& api_version, const std::string& kind,
                               const std::string& name, const std::string& uid, bool controller) {
  return {{"apiVersion", api_version},
          {"kind", kind},
          {"name", name},
          {"uid", uid},
          {"controller", controller}};
}

}  // namespace kiln::runtime::testing

#endif  // KILN_TESTS_RUNTIME_FAKE_CLUSTER_H_
