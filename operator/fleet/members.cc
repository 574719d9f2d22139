#include "operator/fleet/members.h"

namespace kiln::fleet {

Members::~Members() {
  for (auto& [name, entry] : entries_) entry.member->Stop();
}

std::shared_ptr<Member> Members::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.member;
}

std::optional<uint64_t> Members::ConfigHash(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  return it->second.config_hash;
}

std::vector<std::string> Members::Names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

void Members::Put(const std::string& name, std::shared_ptr<Member> member, uint64_t config_hash) {
  std::shared_ptr<Member> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = entries_[name];
    old = std::move(e.member);
    e = Entry{std::move(member), config_hash};
  }
  if (old) old->Stop();  // Outside the lock: joins the informers' threads.
}

bool Members::Remove(const std::string& name) {
  std::shared_ptr<Member> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return false;
    old = std::move(it->second.member);
    entries_.erase(it);
  }
  old->Stop();
  return true;
}

}  // namespace kiln::fleet
