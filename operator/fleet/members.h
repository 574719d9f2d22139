// Members: the registry of live member-cluster connections, by MemberCluster
// name. The MemberCluster controller puts and removes them; other controllers
// (TrainingJob, ModelDeployment) look one up to read a member's caches or
// write through its client. A Member handed out stays valid while held, even
// after it is replaced: its informers are stopped, so its caches go stale, and
// the next lookup returns the new one. Thread-safe.
#ifndef KILN_OPERATOR_FLEET_MEMBERS_H_
#define KILN_OPERATOR_FLEET_MEMBERS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "operator/fleet/member.h"

namespace kiln::fleet {

class Members {
 public:
  Members() = default;
  ~Members();  // Stops every member.
  Members(const Members&) = delete;
  Members& operator=(const Members&) = delete;

  // The member named `name`, or nullptr.
  std::shared_ptr<Member> Get(const std::string& name) const;
  // The hash of the kubeconfig `name`'s member was built from, if any.
  std::optional<uint64_t> ConfigHash(const std::string& name) const;
  // Names of every member, sorted.
  std::vector<std::string> Names() const;

  // Installs `member` under `name`, built from a kubeconfig hashing to
  // `config_hash`; a member already there is stopped and dropped.
  void Put(const std::string& name, std::shared_ptr<Member> member, uint64_t config_hash);
  // Stops and drops `name`'s member. True if there was one.
  bool Remove(const std::string& name);

 private:
  struct Entry {
    std::shared_ptr<Member> member;
    uint64_t config_hash = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // Guarded by mu_.
};

}  // namespace kiln::fleet

#endif  // KILN_OPERATOR_FLEET_MEMBERS_H_
