#include "runtime/health_checks.h"

#include <vector>

namespace kiln::runtime {

void HealthChecks::Add(const std::string& name, std::function<Status()> check) {
  std::lock_guard<std::mutex> lock(mu_);
  checks_[name] = std::move(check);
}

HttpReply HealthChecks::Serve(const HttpRequest& query) const {
  std::map<std::string, std::function<Status()>> checks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    checks = checks_;
  }
  // "/readyz/<name>": that one check.
  if (query.path.size() > endpoint_.size()) {
    std::string name = query.path.substr(endpoint_.size() + 1);
    auto it = checks.find(name);
    if (it == checks.end())
      return {404, "text/plain; charset=utf-8", "no check \"" + name + "\"\n"};
    Status s = it->second();
    if (s.ok()) return {200, "text/plain; charset=utf-8", "ok"};
    return {500, "text/plain; charset=utf-8", "[-]" + name + " failed: " + s.message() + "\n"};
  }
  auto exclude = query.query.find("exclude");
  bool verbose = query.query.count("verbose") != 0;
  std::string body;
  bool healthy = true;
  for (const auto& [name, check] : checks) {
    if (exclude != query.query.end() && exclude->second == name) {
      body += "[+]" + name + " excluded: ok\n";
      continue;
    }
    Status s = check();
    if (s.ok()) {
      body += "[+]" + name + " ok\n";
    } else {
      healthy = false;
      body += "[-]" + name + " failed: " + s.message() + "\n";
    }
  }
  std::string what = endpoint_.substr(1);  // "readyz"
  if (healthy)
    return {200, "text/plain; charset=utf-8", verbose ? body + what + " check passed\n" : "ok"};
  return {500, "text/plain; charset=utf-8", body + what + " check failed\n"};
}

}  // namespace kiln::runtime
