#include "operator/controllers/trainingjob/worker_pods.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include "base/time_format.h"
#include "operator/controllers/storage/s3_access.h"

namespace kiln::trainingjob {
namespace {

using nlohmann::json;
namespace v1 = api::v1alpha1;

constexpr size_t kMaxLabel = 63;
constexpr const char* kScratchMount = "/scratch";  // Prepared data and /tmp.

// FNV-1a: a short, stable name hash (not a security boundary).
std::string Hash8(const std::string& s) {
  uint32_t h = 2166136261u;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    h ^= c;
    h *= 16777619u;
  }
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", h);
  return buf;
}

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

bool IsS3(const std::string& uri) { return uri.rfind("s3://", 0) == 0; }

// A file:// URI's path, or InvalidArgument naming `field`.
StatusOr<std::string> FilePath(const std::string& uri, const std::string& field) {
  const std::string scheme = "file://";
  if (uri.rfind(scheme, 0) != 0 || uri.size() <= scheme.size() || uri[scheme.size()] != '/') {
    return Status::InvalidArgument(field + ": \"" + uri +
                                   "\" is not a file:///absolute/path or s3:// URI");
  }
  return uri.substr(scheme.size());
}

bool Under(const std::string& path, const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return path == d || path.rfind(d + "/", 0) == 0;
}

// Labels naming the job; `attempt` < 0 for what outlives attempts.
json Labels(const v1::TrainingJob& job, int32_t attempt) {
  // A label value holds at most 63 characters; longer job names are cut
  // and hashed (the UID label identifies the job exactly).
  std::string name = Str(job.metadata, "name");
  if (name.size() > kMaxLabel) name = DnsLabel(name, "");
  json labels = {{api::kManagedByLabel, api::kManagedByValue},
                 {kJobNameLabel, name},
                 {kJobUidLabel, Str(job.metadata, "uid")}};
  if (attempt >= 0) labels[kAttemptLabel] = std::to_string(attempt);
  return labels;
}

json OwnerReference(const v1::TrainingJob& job) {
  return json::array({{{"apiVersion", v1::TrainingJob::kApiVersion},
                       {"kind", v1::TrainingJob::kKind},
                       {"name", Str(job.metadata, "name")},
                       {"uid", Str(job.metadata, "uid")},
                       {"controller", true},
                       {"blockOwnerDeletion", true}}});
}

json Metadata(const v1::TrainingJob& job, const std::string& name, json labels,
              const WorkerPodOptions& options) {
  json m = {{"name", name}, {"namespace", Str(job.metadata, "namespace")}, {"labels", labels}};
  if (options.same_cluster_as_job) m["ownerReferences"] = OwnerReference(job);
  return m;
}

json SecurityContext() {
  return {{"allowPrivilegeEscalation", false},
          {"readOnlyRootFilesystem", true},
          {"runAsNonRoot", true},
          {"capabilities", {{"drop", json::array({"ALL"})}}}};
}

template <typename T>
std::string Num(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", v);
    return buf;
  } else {
    return std::to_string(v);
  }
}

// After a LossDiverged restart, the attempt it started rewinds: its workers
// get --rewind-before-step (and --skip-data-through-step), from the last
// restartHistory record. Only that attempt, and only until it is suspended:
// by then it has rewound, and resuming it must keep its own newer
// checkpoints, which a second rewind would delete.
std::vector<std::string> RewindArgs(const v1::TrainingJob& job, int32_t attempt) {
  if (!job.status || !job.status->restart_history || job.status->restart_history->empty() ||
      job.status->restarts.value_or(0) != attempt) {
    return {};
  }
  const v1::RestartRecord& last = job.status->restart_history->back();
  if (last.reason != "LossDiverged" || !last.rewind_before_step) return {};
  if (job.status->conditions) {
    auto restarted = ParseRfc3339(last.time);
    for (const v1::Condition& c : *job.status->conditions) {
      if (c.type != "Suspended") continue;
      auto changed = ParseRfc3339(c.last_transition_time);
      // Whole seconds against milliseconds: a suspension in the same second
      // counts as after the restart (no second rewind).
      if (!restarted.ok() || !changed.ok() ||
          *changed >= std::chrono::floor<std::chrono::seconds>(*restarted)) {
        return {};
      }
    }
  }
  std::vector<std::string> args = {"--rewind-before-step=" + Num(*last.rewind_before_step)};
  if (last.failed_at_step) args.push_back("--skip-data-through-step=" + Num(*last.failed_at_step));
  return args;
}

}  // namespace

std::string DnsLabel(const std::string& base, const std::string& suffix) {
  std::string clean;
  for (char c : base) {
    const auto u = static_cast<unsigned char>(c);
    clean += std::isalnum(u) ? static_cast<char>(std::tolower(u)) : '-';
  }
  if (clean.empty() || !std::isalpha(static_cast<unsigned char>(clean[0]))) clean = "j" + clean;
  std::string out = clean + suffix;
  if (out.size() > kMaxLabel) {
    const std::string tag = "-" + Hash8(base);
    const size_t keep = kMaxLabel - suffix.size() - tag.size();
    out = clean.substr(0, keep);
    while (!out.empty() && out.back() == '-') out.pop_back();
    out += tag + suffix;
  }
  return out;
}

std::string WorkerPodName(const std::string& job, int32_t attempt, int32_t rank) {
  return DnsLabel(job, "-" + std::to_string(attempt) + "-" + std::to_string(rank));
}

std::string CredentialsCopyName(const std::string& job) { return DnsLabel(job, "-s3-credentials"); }

json BuildCredentialsCopy(const v1::TrainingJob& job, const json& secret) {
  return s3access::MemberCopy(secret, Str(job.metadata, "namespace"),
                              CredentialsCopyName(Str(job.metadata, "name")), Labels(job, -1));
}

StatusOr<GangObjects> BuildGang(const v1::TrainingJob& job,
                                const std::vector<RankPlacement>& placement,
                                const WorkerPodOptions& options) {
  const v1::TrainingJobSpec& spec = job.spec;
  const std::string name = Str(job.metadata, "name");
  const auto world = static_cast<int32_t>(placement.size());
  if (name.empty()) return Status::InvalidArgument("metadata.name: empty");
  if (world < 1) return Status::InvalidArgument("placement: no workers placed");
  // The placement sizes the gang, not spec.workers.replicas: after `kubectl
  // scale` the running gang keeps its size until it is resized (resize.h).
  const v1::TrainingConfig& t = spec.training;
  const int64_t per_pass = static_cast<int64_t>(t.micro_batch_size) * world;
  if (t.micro_batch_size < 1 || t.global_batch_size < 1 || t.global_batch_size % per_pass != 0) {
    return Status::InvalidArgument(
        "spec.training.globalBatchSize: " + std::to_string(t.global_batch_size) +
        " is not a multiple of microBatchSize (" + std::to_string(t.micro_batch_size) + ") x " +
        std::to_string(world) + " workers");
  }
  const int64_t accumulation = t.global_batch_size / per_pass;
  const bool has_volume = !options.volume.claim_name.empty() || !options.volume.host_path.empty();
  if (!options.volume.claim_name.empty() && !options.volume.host_path.empty()) {
    return Status::InvalidArgument(
        "shared volume: set exactly one of a PersistentVolumeClaim and a hostPath");
  }
  const std::optional<v1::S3Storage> s3 =
      spec.storage ? spec.storage->s3 : std::optional<v1::S3Storage>();
  for (const auto& [uri, field] : {std::pair{&spec.checkpoint.uri, "spec.checkpoint.uri"},
                                   std::pair{&spec.data.uri, "spec.data.uri"}}) {
    if (IsS3(*uri) && !s3) {
      return Status::InvalidArgument(std::string(field) + ": " + *uri +
                                     " needs spec.storage.s3 (the store's endpoint and the Secret "
                                     "with its credentials)");
    }
  }
  // s3:// checkpoints go to the store as they are; file:// ones must lie on
  // the shared volume, so every rank and every restart sees them.
  std::string ckpt_dir = spec.checkpoint.uri;
  if (!IsS3(spec.checkpoint.uri)) {
    KILN_ASSIGN_OR_RETURN(ckpt_dir, FilePath(spec.checkpoint.uri, "spec.checkpoint.uri"));
    if (!has_volume) {
      return Status::InvalidArgument(
          "spec.checkpoint.uri: " + spec.checkpoint.uri +
          " is a file:// URI, but kiln-operator has no shared volume (--shared-volume-claim or "
          "--shared-volume-host-path); use one, or s3://");
    }
    if (!Under(ckpt_dir, options.volume.mount_path)) {
      return Status::InvalidArgument("spec.checkpoint.uri: " + spec.checkpoint.uri +
                                     " is outside the shared volume mounted at " +
                                     options.volume.mount_path +
                                     " (every rank and every restart must see the checkpoints)");
    }
  }
  // s3:// data is a prepared dataset (`kiln-worker prepare --output s3://`),
  // which train reads shard by shard; file:// data is prepared by each rank.
  std::string data_path, manifest = std::string(kScratchMount) + "/data/manifest.json";
  if (IsS3(spec.data.uri)) {
    manifest = spec.data.uri;
    if (!manifest.ends_with(".json")) {
      while (manifest.back() == '/') manifest.pop_back();
      manifest += "/manifest.json";
    }
  } else {
    KILN_ASSIGN_OR_RETURN(data_path, FilePath(spec.data.uri, "spec.data.uri"));
  }

  GangObjects out;
  const std::string service = DnsLabel(name, "");
  const std::string rank0 = WorkerPodName(name, options.attempt, 0);
  const std::string master = rank0 + "." + service + "." + Str(job.metadata, "namespace") + ".svc";
  const int32_t gpus = spec.workers.gpus_per_worker.value_or(0);
  std::vector<std::string> train_args = {
      "train",
      "--data=" + manifest,
      "--layers=" + Num(spec.model.layers),
      "--heads=" + Num(spec.model.heads),
      "--channels=" + Num(spec.model.hidden_size),
      "--seq=" + Num(t.sequence_length),
      "--batch=" + Num(t.micro_batch_size),
      "--grad-accum=" + Num(accumulation),
      "--steps=" + Num(t.steps),
      "--checkpoint-dir=" + ckpt_dir,
      "--metrics-bind-address=:" + Num(options.metrics_port),
      // A GPU worker on a node whose GPUs are only advertised (the local
      // clusters' fake GPUs) trains on the CPU and says so.
      "--device=" + std::string(gpus > 0 ? "auto" : "cpu"),
  };
  if (t.learning_rate) train_args.push_back("--lr=" + Num(*t.learning_rate));
  if (t.warmup_steps) train_args.push_back("--warmup=" + Num(*t.warmup_steps));
  if (t.weight_decay) train_args.push_back("--weight-decay=" + Num(*t.weight_decay));
  if (t.seed) train_args.push_back("--seed=" + Num(*t.seed));
  if (spec.checkpoint.interval_steps) {
    train_args.push_back("--checkpoint-every=" + Num(*spec.checkpoint.interval_steps));
  }
  if (spec.checkpoint.keep) train_args.push_back("--checkpoint-keep=" + Num(*spec.checkpoint.keep));
  for (std::string& arg : RewindArgs(job, options.attempt)) train_args.push_back(std::move(arg));
  // The gang's fence token (worker/train/fence.h): a gang left running in a
  // member cut off from the hub stops at its next check once this attempt
  // holds the checkpoints, instead of writing beside it.
  if (const std::string uid = Str(job.metadata, "uid"); !uid.empty()) {
    train_args.push_back("--fence=" + uid + ":" + Num(options.attempt));
  }

  json volumes = json::array({{{"name", "scratch"}, {"emptyDir", json::object()}}});
  json mounts = json::array({{{"name", "scratch"}, {"mountPath", kScratchMount}}});
  if (!options.volume.claim_name.empty()) {
    volumes.push_back({{"name", "shared"},
                       {"persistentVolumeClaim", {{"claimName", options.volume.claim_name}}}});
  } else if (!options.volume.host_path.empty()) {
    volumes.push_back({{"name", "shared"},
                       {"hostPath", {{"path", options.volume.host_path}, {"type", "Directory"}}}});
  }
  if (has_volume) mounts.push_back({{"name", "shared"}, {"mountPath", options.volume.mount_path}});
  json resources = json::object();
  if (spec.workers.resources) resources = *spec.workers.resources;
  if (gpus > 0) {
    resources["limits"]["nvidia.com/gpu"] = gpus;
    resources["requests"]["nvidia.com/gpu"] = gpus;
  }
  const std::string image = spec.workers.image;

  std::set<std::string> clusters;
  for (int32_t rank = 0; rank < world; ++rank) {
    const RankPlacement& p = placement[static_cast<size_t>(rank)];
    json env = json::array({{{"name", "RANK"}, {"value", Num(rank)}},
                            {{"name", "WORLD_SIZE"}, {"value", Num(world)}},
                            {{"name", "MASTER_ADDR"}, {"value", master}},
                            {{"name", "MASTER_PORT"}, {"value", Num(options.master_port)}},
                            {{"name", "TMPDIR"}, {"value", kScratchMount}}});
    for (const auto& e : spec.workers.env.value_or(std::vector<v1::EnvVar>{})) {
      env.push_back({{"name", e.name}, {"value", e.value.value_or("")}});
    }
    json labels = Labels(job, options.attempt);
    labels[kRankLabel] = Num(rank);
    const std::string pod_name = WorkerPodName(name, options.attempt, rank);
    json pod_spec = {
        {"hostname", pod_name},
        {"subdomain", service},
        {"restartPolicy", "Never"},
        {"schedulingGates", json::array({{{"name", kGangGate}}})},
        {"affinity",
         {{"nodeAffinity",
           {{"requiredDuringSchedulingIgnoredDuringExecution",
             {{"nodeSelectorTerms",
               json::array({{{"matchFields", json::array({{{"key", "metadata.name"},
                                                           {"operator", "In"},
                                                           {"values", {p.node}}}})}}})}}}}}}},
        {"securityContext",
         {{"runAsNonRoot", true},
          {"runAsUser", 65532},
          {"runAsGroup", 65532},
          {"fsGroup", 65532},
          {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
        {"initContainers",
         json::array({{{"name", "prepare"},
                       {"image", image},
                       {"imagePullPolicy", "IfNotPresent"},
                       {"args", json::array({"prepare", "--input", data_path, "--output",
                                             std::string(kScratchMount) + "/data"})},
                       {"volumeMounts", mounts},
                       {"securityContext", SecurityContext()}}})},
        {"containers",
         json::array(
             {{{"name", kWorkerContainer},
               {"image", image},
               {"imagePullPolicy", "IfNotPresent"},
               {"args", train_args},
               {"env", env},
               {"ports",
                json::array({{{"name", "metrics"}, {"containerPort", options.metrics_port}},
                             {{"name", "rendezvous"}, {"containerPort", options.master_port}}})},
               {"resources", resources},
               {"volumeMounts", mounts},
               {"terminationMessagePath", "/dev/termination-log"},
               {"terminationMessagePolicy", "FallbackToLogsOnError"},
               {"securityContext", SecurityContext()}}})},
        {"volumes", volumes},
    };
    // Prepared s3:// data needs no preparing.
    if (data_path.empty()) pod_spec.erase("initContainers");
    if (s3) {
      auto copy = options.credentials_secrets.find(p.cluster);
      s3access::AddToPod(*s3,
                         copy != options.credentials_secrets.end()
                             ? copy->second
                             : s3->credentials_secret_ref.name,
                         pod_spec);
    }
    if (spec.workers.node_selector) pod_spec["nodeSelector"] = *spec.workers.node_selector;
    if (spec.workers.tolerations) pod_spec["tolerations"] = *spec.workers.tolerations;
    if (spec.workers.priority_class_name) {
      pod_spec["priorityClassName"] = *spec.workers.priority_class_name;
    }
    out.pods.push_back({{"apiVersion", "v1"},
                        {"kind", "Pod"},
                        {"metadata", Metadata(job, pod_name, labels, options)},
                        {"spec", pod_spec}});
    out.pod_clusters.push_back(p.cluster);
    clusters.insert(p.cluster);
  }
  for (const auto& cluster : clusters) {
    json selector = {{kJobUidLabel, Str(job.metadata, "uid")},
                     {kAttemptLabel, Num(options.attempt)}};
    out.services.push_back(
        {{"apiVersion", "v1"},
         {"kind", "Service"},
         {"metadata", Metadata(job, service, Labels(job, options.attempt), options)},
         {"spec",
          {{"clusterIP", "None"},
           // Ranks resolve each other while they start, before any is ready.
           {"publishNotReadyAddresses", true},
           {"selector", selector},
           {"ports", json::array({{{"name", "rendezvous"}, {"port", options.master_port}}})}}}});
    out.service_clusters.push_back(cluster);
  }
  return out;
}

}  // namespace kiln::trainingjob
