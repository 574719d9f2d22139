#include "runtime/manager.h"

#include <future>
#include <map>
#include <thread>

#include "base/hostname.h"

namespace kiln::runtime {
namespace {

EventRecorderOptions RecorderOptions(const ManagerOptions& o) {
  EventRecorderOptions e;
  e.component = o.name;
  e.host = o.leader_election ? o.leader_election->identity : Hostname();
  return e;
}

}  // namespace

Manager::Manager(kube::Client& client, ManagerOptions options)
    : client_(client),
      options_(std::move(options)),
      metrics_(options_.metrics != nullptr ? options_.metrics : &Metrics::Global()),
      log_(log::Logger("manager")),
      events_(client, RecorderOptions(options_)) {
  healthz_.Add("ping", [] { return Status::Ok(); });
  readyz_.Add("informers", [this] {
    std::string unsynced;
    for (size_t i = 0; i < informers_.size(); ++i) {
      if (!informers_[i]->HasSynced())
        unsynced += (unsynced.empty() ? "" : ", ") + informer_names_[i];
    }
    if (unsynced.empty()) return Status::Ok();
    return Status::Unavailable("caches not synced: " + unsynced);
  });
}

Manager::~Manager() { Shutdown(); }

StatusOr<kube::Informer*> Manager::GetInformer(kube::Client& client, const kube::Resource& resource,
                                               kube::InformerOptions options) {
  const std::string what = resource.resource +
                           (resource.group.empty() ? "" : "." + resource.group) +
                           (options.ns.empty() ? "" : " in " + options.ns);
  for (const auto& i : informers_) {
    if (&i->client() != &client || i->resource().group != resource.group ||
        i->resource().resource != resource.resource || i->options().ns != options.ns) {
      continue;
    }
    if (i->options() != options) {
      return Status::FailedPrecondition("the " + what +
                                        " informer already exists with other options (selectors, "
                                        "resync, paging); share one set of options");
    }
    return i.get();
  }
  if (informers_started_.load()) {
    return Status::FailedPrecondition("the " + what + " informer was asked for after Run started");
  }
  informers_.push_back(std::make_unique<kube::Informer>(client, resource, options));
  std::string name = resource.resource + (resource.group.empty() ? "" : "." + resource.group);
  // Several clusters may each have an informer for one resource.
  int same = 0;
  for (const auto& n : informer_names_) same += n.rfind(name, 0) == 0 ? 1 : 0;
  if (same > 0) name += "#" + std::to_string(same);
  informer_names_.push_back(name);
  metrics_->AddInformer(name, informers_.back().get());
  return informers_.back().get();
}

Controller& Manager::AddController(const std::string& name, Reconciler& reconciler,
                                   ControllerOptions options) {
  controllers_.push_back(
      std::make_unique<Controller>(name, reconciler, std::move(options), metrics_));
  return *controllers_.back();
}

std::string Manager::metrics_url() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_url_;
}

std::string Manager::health_url() const {
  std::lock_guard<std::mutex> lock(mu_);
  return health_url_;
}

Status Manager::StartServers() {
  std::map<std::string, std::vector<HttpRoute>> by_address;
  if (options_.metrics_bind_address != "0") {
    by_address[options_.metrics_bind_address].push_back(
        HttpRoute::Get("/metrics", [this](const HttpRequest&) {
          return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", metrics_->Scrape()};
        }));
  }
  if (options_.health_probe_bind_address != "0") {
    auto& routes = by_address[options_.health_probe_bind_address];
    routes.push_back(HttpRoute::Get(
        "/healthz", [this](const HttpRequest& r) { return healthz_.Serve(r); },
        HttpMatch::kPrefix));
    routes.push_back(HttpRoute::Get(
        "/readyz", [this](const HttpRequest& r) { return readyz_.Serve(r); }, HttpMatch::kPrefix));
  }
  for (auto& [address, routes] : by_address) {
    bool metrics = false, health = false;
    for (const auto& r : routes) {
      metrics = metrics || r.path == "/metrics";
      health = health || r.path == "/healthz";
    }
    KILN_ASSIGN_OR_RETURN(auto server,
                          HttpServer::Start({.bind_address = address}, std::move(routes)));
    std::lock_guard<std::mutex> lock(mu_);
    if (metrics) metrics_url_ = server->url();
    if (health) health_url_ = server->url();
    log_.Info("serving", {{"url", server->url()}, {"metrics", metrics}, {"health", health}});
    servers_.push_back(std::move(server));
  }
  return Status::Ok();
}

void Manager::StartControllers() {
  for (auto& c : controllers_) c->Start();
  controllers_started_ = true;
  log_.Info("controllers started", {{"count", controllers_.size()}});
}

bool Manager::StopControllers() {
  if (!controllers_started_.exchange(false)) return true;
  // Stop drains the queues and joins the workers; a reconcile stuck on a
  // dead API server must not hold the process past the grace period.
  // Cancel every reconcile's context first, so none waits for another's drain.
  for (auto& c : controllers_) c->RequestStop();
  auto done = std::async(std::launch::async, [this] {
    for (auto& c : controllers_) c->Stop();
  });
  if (done.wait_for(options_.graceful_shutdown_timeout) == std::future_status::timeout) {
    log_.Warn("graceful shutdown timed out; in-flight reconciles abandoned",
              {{"timeout_ms", options_.graceful_shutdown_timeout.count()}});
    // The future's destructor would wait: hand it to a detached thread.
    std::thread([f = std::move(done)]() mutable { f.wait(); }).detach();
    return false;
  }
  return true;
}

void Manager::Shutdown() {
  StopControllers();
  for (auto& i : informers_) i->Stop();
  events_.Flush(std::chrono::seconds(5));
  // A probe or scrape in flight may finish.
  for (auto& s : servers_) s->Drain(std::chrono::seconds(1));
  servers_.clear();
}

Status Manager::Run(const std::atomic<bool>& stop) {
  KILN_RETURN_IF_ERROR(StartServers());
  informers_started_ = true;
  for (auto& i : informers_) i->Start();
  auto sync_deadline = std::chrono::steady_clock::now() + options_.cache_sync_timeout;
  for (size_t i = 0; i < informers_.size(); ++i) {
    while (!informers_[i]->WaitForSync(std::chrono::milliseconds(100))) {
      if (stop.load()) {
        Shutdown();
        return Status::Ok();
      }
      if (std::chrono::steady_clock::now() > sync_deadline) {
        Status why = informers_[i]->last_error();
        Shutdown();
        return Status::DeadlineExceeded("cache for " + informer_names_[i] + " did not sync in " +
                                        std::to_string(options_.cache_sync_timeout.count()) +
                                        " ms" + (why.ok() ? "" : ": " + why.ToString()));
      }
    }
  }
  log_.Info("caches synced", {{"informers", informers_.size()}});

  std::atomic<bool> lost{false};
  std::atomic<bool> elector_stop{false};
  std::thread elector_thread;
  if (options_.leader_election) {
    KILN_RETURN_IF_ERROR(LeaderElector::Validate(*options_.leader_election));
    const LeaderElectionConfig& lec = *options_.leader_election;
    elector_ = std::make_unique<LeaderElector>(client_, lec);
    metrics_->SetLeader(lec.lease_name, false);
    log_.Info("campaigning for leadership",
              {{"lease", lec.lease_namespace + "/" + lec.lease_name}, {"identity", lec.identity}});
    elector_thread = std::thread([&, lec] {
      elector_->Run(
          [&] {
            leading_ = true;
            metrics_->SetLeader(lec.lease_name, true);
            log_.Info("became leader", {{"lease", lec.lease_name}, {"identity", lec.identity}});
            StartControllers();
          },
          [&] {
            leading_ = false;
            metrics_->SetLeader(lec.lease_name, false);
            if (!stop.load()) lost = true;
          },
          elector_stop);
    });
  } else {
    leading_ = true;
    StartControllers();
  }

  while (!stop.load() && !lost.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));

  if (lost)
    log_.Warn("leadership lost; stopping", {});
  else
    log_.Info("stop requested; shutting down", {});
  bool graceful = StopControllers();
  // The controllers are quiet now: only then hand the lease to a standby.
  elector_stop = true;
  if (elector_thread.joinable()) elector_thread.join();
  leading_ = false;
  Shutdown();
  if (lost) return Status::Aborted("leader election lost");
  if (!graceful) {
    return Status::DeadlineExceeded(
        "controllers did not stop within the graceful-shutdown "
        "timeout");
  }
  log_.Info("stopped cleanly", {});
  return Status::Ok();
}

}  // namespace kiln::runtime
