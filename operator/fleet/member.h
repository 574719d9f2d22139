// Member: kiln's live connection to one member cluster — its API client, its
// informers' caches (nodes, pods), and a heartbeat probe. Made by a Connector
// from a MemberCluster's kubeconfig; the MemberCluster controller owns its
// lifetime and calls Stop when the MemberCluster goes or its Secret changes.
// Other controllers get one from Members by cluster name. Implementations
// are thread-safe.
#ifndef KILN_OPERATOR_FLEET_MEMBER_H_
#define KILN_OPERATOR_FLEET_MEMBER_H_

#include <chrono>
#include <memory>
#include <string>

#include "base/statusor.h"
#include "kube/client.h"
#include "kube/rest_config.h"
#include "runtime/reader.h"

namespace kiln::fleet {

class Member {
 public:
  virtual ~Member() = default;

  // The MemberCluster's name.
  virtual const std::string& name() const = 0;
  // The cluster's API client (retries, rate limits as configured).
  virtual kube::Client& client() = 0;
  // The informers' caches; Unavailable until synced.
  virtual const runtime::Reader& nodes() const = 0;
  virtual const runtime::Reader& pods() const = 0;

  // One heartbeat: GET /readyz, no retries, within `timeout`. Ok when the
  // API server answers ready; otherwise the error as kube::Client reports it
  // (Unavailable, DeadlineExceeded, FailedPrecondition for TLS, an ApiError
  // for 401/403/5xx).
  virtual Status Probe(std::chrono::milliseconds timeout) = 0;
  // The API server's version ("v1.33.13"), once a probe has read it; "".
  virtual std::string version() const = 0;
  // Ok when every informer has synced; else why not (the informers' last
  // errors, e.g. a watch refused by RBAC).
  virtual Status CachesSynced() const = 0;

  // Stops the informers (their handlers are not called afterwards). The
  // client stays usable for holders of this Member. Idempotent.
  virtual void Stop() = 0;
};

// Makes Members. The production one (ClusterConnector) builds real clients
// and informers; unit tests script fakes.
class Connector {
 public:
  virtual ~Connector() = default;
  // A started connection to cluster `name` with `config`. InvalidArgument
  // for a configuration no client can be built from (e.g. a CA that is not
  // PEM).
  virtual StatusOr<std::shared_ptr<Member>> Connect(const std::string& name,
                                                    const kube::RestConfig& config) = 0;
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_MEMBER_H_
