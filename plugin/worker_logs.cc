#include "plugin/worker_logs.h"

#include "base/base64.h"
#include "kube/api_error.h"
#include "kube/kubeconfig.h"
#include "operator/api/v1alpha1/resources.h"
#include "operator/controllers/trainingjob/worker_pods.h"
#include "plugin/api_errors.h"

namespace kiln::plugin {
namespace {

using kube::json;
namespace v1 = api::v1alpha1;

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// The pod of the highest attempt among `pods` (a list's items), or "".
std::string Newest(const json& pods) {
  std::string best;
  long long best_attempt = -1;
  for (const auto& p : pods.value("items", json::array())) {
    const json labels = p["metadata"].value("labels", json::object());
    long long attempt = 0;
    try {
      attempt = std::stoll(Str(labels, trainingjob::kAttemptLabel));
    } catch (const std::exception&) {
      continue;  // Not a worker pod of the controller's making.
    }
    if (attempt > best_attempt) {
      best_attempt = attempt;
      best = Str(p["metadata"], "name");
    }
  }
  return best;
}

// The member cluster `rank` was placed on, from status.placement.
std::string ClusterOfRank(const json& status, int32_t rank) {
  int32_t next = 0;
  for (const auto& c : status.value("placement", json::array())) {
    for (size_t i = 0; i < c.value("nodes", json::array()).size(); ++i, ++next) {
      if (next == rank) return Str(c, "cluster");
    }
  }
  return "";
}

}  // namespace

StatusOr<WorkerPod> FindWorkerPod(kube::Client& hub, const json& job, int32_t rank) {
  const json meta = job.value("metadata", json::object());
  const json status = job.value("status", json::object());
  const std::string ns = Str(meta, "namespace"), job_name = Str(meta, "name");
  const int32_t replicas =
      job.value("spec", json::object()).value("workers", json::object()).value("replicas", 0);
  if (rank >= replicas) {
    return Status::InvalidArgument(
        "trainingjob \"" + job_name + "\" has " + std::to_string(replicas) + " workers (ranks 0-" +
        std::to_string(replicas - 1) + "); there is no rank " + std::to_string(rank));
  }
  const std::string selector = std::string(trainingjob::kJobUidLabel) + "=" + Str(meta, "uid") +
                               "," + trainingjob::kRankLabel + "=" + std::to_string(rank);
  const int32_t attempt = status.value("restarts", 0);
  const std::string expected = trainingjob::WorkerPodName(job_name, attempt, rank);
  const std::string cluster = ClusterOfRank(status, rank);
  const std::string by_hand = "; with the member's own credentials: kubectl logs -n " + ns + " " +
                              expected + " -c " + trainingjob::kWorkerContainer;

  Attempt list_pods{"list", "pods", "pod", ns, "", hub.config().server};
  auto hub_pods = hub.List(kube::resources::kPods, ns, {.label_selector = selector});
  std::string hub_problem;
  if (hub_pods.ok()) {
    if (std::string name = Newest(*hub_pods); !name.empty()) {
      return WorkerPod{"", ns, name, nullptr};
    }
  } else {
    hub_problem = Explain(hub_pods.status(), list_pods);
  }
  const std::string not_in_hub = hub_problem.empty()
                                     ? "rank " + std::to_string(rank) + "'s pod is not in the hub"
                                     : "the hub's pods could not be listed (" + hub_problem + ")";
  if (cluster.empty()) {
    return Status::NotFound("trainingjob \"" + job_name + "\" has no placement (phase " +
                            (Str(status, "phase").empty() ? "Pending" : Str(status, "phase")) +
                            ") and " + not_in_hub + " (namespace \"" + ns + "\")");
  }

  Attempt get_member{"get",   "memberclusters.kiln.dev", "membercluster", "",
                     cluster, hub.config().server};
  auto member = hub.Get(v1::kMemberClusters, "", cluster);
  if (!member.ok()) {
    return Status(
        member.status().code(),
        not_in_hub + "; rank " + std::to_string(rank) + " was placed on member cluster " + cluster +
            ", and reaching it failed: " + Explain(member.status(), get_member) + by_hand);
  }
  const json spec = member->value("spec", json::object());
  if (spec.value("local", false)) {
    return Status::NotFound(not_in_hub + " (namespace \"" + ns + "\"), and its member cluster " +
                            cluster + " is the hub itself (spec.local): the pod " + expected +
                            " does not exist (yet, or any more)");
  }
  const json ref = spec.value("kubeconfigSecretRef", json::object());
  const std::string secret_ns = Str(ref, "namespace"), secret_name = Str(ref, "name");
  const std::string key = Str(ref, "key").empty() ? "kubeconfig" : Str(ref, "key");
  const std::string what = "Secret " + secret_ns + "/" + secret_name;
  Attempt get_secret{"get", "secrets", "secret", secret_ns, secret_name, hub.config().server};
  auto secret = hub.Get(kube::resources::kSecrets, secret_ns, secret_name);
  if (!secret.ok()) {
    return Status(secret.status().code(),
                  not_in_hub + "; rank " + std::to_string(rank) + " runs on member cluster " +
                      cluster + ", whose kubeconfig is in " + what +
                      ", which cannot be read: " + Explain(secret.status(), get_secret) + by_hand);
  }
  const json data = secret->value("data", json::object());
  if (!data.contains(key) || !data[key].is_string()) {
    return Status::NotFound(what + " (member cluster " + cluster + ") has no key " + key + by_hand);
  }
  auto text = Base64Decode(data[key].get<std::string>());
  if (!text.ok())
    return Status::InvalidArgument(what + " key " + key + ": " + text.status().message());
  auto config = kube::ParseKubeconfig(*text, "", "", what + " key " + key);
  if (!config.ok()) return config.status();
  auto client = kube::Client::New(*config);
  if (!client.ok()) return client.status();
  list_pods.server = (*client)->config().server;
  auto pods = (*client)->List(kube::resources::kPods, ns, {.label_selector = selector});
  if (!pods.ok()) {
    return Status(pods.status().code(),
                  "member cluster " + cluster + ": " + Explain(pods.status(), list_pods) + by_hand);
  }
  std::string name = Newest(*pods);
  if (name.empty()) {
    return Status::NotFound("rank " + std::to_string(rank) +
                            "'s pod is neither in the hub nor in " + "member cluster " + cluster +
                            " (namespace \"" + ns + "\"): it does not exist (yet, or any more)");
  }
  return WorkerPod{cluster, ns, name, std::move(*client)};
}

Status ReadWorkerLog(kube::Client& client, const WorkerPod& pod, const LogOptions& options,
                     const std::function<void(std::string_view)>& write,
                     const std::atomic<bool>* cancel) {
  std::string query;
  kube::AppendQuery(query, "container", trainingjob::kWorkerContainer);
  if (options.follow) kube::AppendQuery(query, "follow", "true");
  if (options.tail_lines)
    kube::AppendQuery(query, "tailLines", std::to_string(*options.tail_lines));
  kube::HttpRequest req;
  req.path = kube::resources::kPods.Path(pod.ns, pod.name, "log") + query;
  const Attempt attempt{"get", "pods/log", "pod", pod.ns, pod.name, client.config().server};
  if (!options.follow) {
    auto r = client.Request(req);
    if (!r.ok()) return Status(r.status().code(), Explain(r.status(), attempt));
    write(r->body);
    return Status::Ok();
  }
  // A followed log is silent as long as the worker prints nothing.
  req.timeout = std::chrono::hours(24 * 365);
  kube::HttpResponse head;
  std::string error_body;
  Status s = client.Stream(
      req, [&](const kube::HttpResponse& h) { head = h; },
      [&](std::string_view chunk) {
        if (head.status != 200) {
          error_body.append(chunk);
        } else {
          write(chunk);
        }
        return true;
      },
      cancel);
  if (!s.ok()) return Status(s.code(), Explain(s, attempt));
  if (head.status != 0 && head.status != 200) {
    head.body = error_body;
    Status e = kube::ErrorFromResponse(head, "GET " + req.path);
    return Status(e.code(), Explain(e, attempt));
  }
  return Status::Ok();
}

}  // namespace kiln::plugin
