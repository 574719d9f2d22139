#include "plugin/commands.h"

#include <chrono>
#include <thread>

#include "base/time_format.h"
#include "kube/api_error.h"
#include "kube/watch.h"
#include "operator/api/v1alpha1/resources.h"
#include "plugin/api_errors.h"
#include "plugin/connection.h"
#include "plugin/rollout_action.h"
#include "plugin/status_view.h"
#include "plugin/worker_logs.h"
#include "plugin/yaml_output.h"

namespace kiln::plugin {
namespace {

using kube::json;
namespace v1 = api::v1alpha1;

// Clears a terminal and puts the cursor home (ANSI), for watch's redraw.
constexpr const char* kClearScreen = "\x1b[H\x1b[2J";

const kube::Resource& ResourceOf(Kind kind) {
  return kind == Kind::kTrainingJob ? v1::kTrainingJobs : v1::kModelDeployments;
}

Attempt AttemptOn(const CommandLine& cl, const kube::Client& client, const std::string& verb,
                  const std::string& ns) {
  return Attempt{verb,
                 ResourceOf(cl.kind).resource + ".kiln.dev",
                 KindName(cl.kind),
                 ns,
                 cl.name,
                 client.config().server};
}

int Fail(Terminal& term, const std::string& message) {
  term.err << "error: " << message << "\n";
  return 1;
}

TimePoint Now() { return std::chrono::system_clock::now(); }

// The object as -o prints it: without managedFields, as kubectl does.
json ForOutput(json object) {
  if (object.contains("metadata") && object["metadata"].is_object()) {
    object["metadata"].erase("managedFields");
  }
  if (object.contains("items") && object["items"].is_array()) {
    for (auto& item : object["items"]) item = ForOutput(std::move(item));
  }
  return object;
}

void PrintRaw(Terminal& term, const std::string& format, const json& object) {
  const json o = ForOutput(object);
  if (format == "json") {
    term.out << o.dump(4) << "\n";
  } else {
    term.out << ToYaml(o);
  }
}

int ShowStatus(const CommandLine& cl, kube::Client& client, Terminal& term) {
  const std::string ns = Namespace(cl, client.config());
  if (cl.name.empty()) {
    const std::string list_ns = cl.all_namespaces ? "" : ns;
    auto list = client.ListAll(ResourceOf(cl.kind), list_ns);
    if (!list.ok())
      return Fail(term, Explain(list.status(), AttemptOn(cl, client, "list", list_ns)));
    if (!cl.output.empty()) {
      PrintRaw(term, cl.output, *list);
      return 0;
    }
    std::vector<json> items = list->value("items", json::array());
    term.out << FormatList(cl.kind, items, cl.all_namespaces, ns, Now());
    return 0;
  }
  auto object = client.Get(ResourceOf(cl.kind), ns, cl.name);
  if (!object.ok()) return Fail(term, Explain(object.status(), AttemptOn(cl, client, "get", ns)));
  if (!cl.output.empty()) {
    PrintRaw(term, cl.output, *object);
  } else {
    term.out << FormatObject(cl.kind, *object, Now());
  }
  return 0;
}

// The part of an object whose change is worth a redraw.
json Watched(const json& object) {
  const json meta = object.value("metadata", json::object());
  return {{"spec", object.value("spec", json())},
          {"status", object.value("status", json())},
          {"deletionTimestamp", meta.value("deletionTimestamp", json())}};
}

int Watch(const CommandLine& cl, kube::Client& client, Terminal& term) {
  const std::string ns = Namespace(cl, client.config());
  const kube::Resource& resource = ResourceOf(cl.kind);
  const std::string what = std::string(KindName(cl.kind)) + " \"" + cl.name + "\"";
  json last;
  bool first = true;
  // Draws `object` if it changed; true when it reached a terminal phase.
  auto show = [&](const json& object) {
    json watched = Watched(object);
    if (!first && watched == last) return IsTerminal(cl.kind, object);
    last = std::move(watched);
    const std::string when = FormatRfc3339(Now());
    const std::string title =
        std::string(KindName(cl.kind)) + "/" + cl.name + " in " + ns + " at " + when;
    if (term.out_is_tty) {
      term.out << kClearScreen << title << " (Ctrl-C to stop)\n\n";
    } else {
      term.out << (first ? "" : "\n") << "--- " << title << "\n";
    }
    first = false;
    term.out << FormatObject(cl.kind, object, Now());
    term.out.flush();
    return IsTerminal(cl.kind, object);
  };
  auto finish = [&](const json& object) {
    const std::string phase = object.value("status", json::object()).value("phase", "");
    term.out << "\n" << what << " is " << phase << ".\n";
    return IsSuccess(cl.kind, object) ? 0 : 1;
  };

  auto object = client.Get(resource, ns, cl.name);
  if (!object.ok()) return Fail(term, Explain(object.status(), AttemptOn(cl, client, "get", ns)));
  if (show(*object)) return finish(*object);
  std::string version = (*object)["metadata"].value("resourceVersion", "");
  int failures = 0;
  while (true) {
    bool deleted = false, done = false;
    json final_object;
    kube::WatchOptions options{.field_selector = "metadata.name=" + cl.name,
                               .resource_version = version};
    Status s = kube::WatchOnce(
        client, resource, ns, options,
        [&](kube::WatchEvent& ev) {
          const std::string rv = ev.object["metadata"].value("resourceVersion", "");
          if (!rv.empty()) version = rv;
          if (ev.type == kube::EventType::kBookmark) return true;
          if (ev.type == kube::EventType::kDeleted) {
            deleted = true;
            return false;
          }
          failures = 0;
          if (show(ev.object)) {
            done = true;
            final_object = ev.object;
            return false;
          }
          return true;
        },
        term.interrupted);
    if (term.interrupted != nullptr && term.interrupted->load()) return kInterruptedExitCode;
    if (done) return finish(final_object);
    if (deleted) return Fail(term, what + " was deleted");
    if (s.ok()) continue;  // The server ended the watch (timeoutSeconds): watch on.
    if (kube::IsResourceExpired(s)) {
      // Too old to resume from: read it afresh and watch from there.
      auto fresh = client.Get(resource, ns, cl.name);
      if (!fresh.ok()) return Fail(term, Explain(fresh.status(), AttemptOn(cl, client, "get", ns)));
      if (show(*fresh)) return finish(*fresh);
      version = (*fresh)["metadata"].value("resourceVersion", "");
      continue;
    }
    const bool transient = s.code() == StatusCode::kUnavailable ||
                           s.code() == StatusCode::kDeadlineExceeded ||
                           s.code() == StatusCode::kResourceExhausted;
    if (!transient || ++failures > 10) {
      return Fail(term, Explain(s, AttemptOn(cl, client, "watch", ns)));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int RolloutAction(const CommandLine& cl, kube::Client& client, Terminal& term) {
  const std::string ns = Namespace(cl, client.config());
  const std::string what = "modeldeployment \"" + cl.name + "\" in namespace \"" + ns + "\"";
  // The write is conditional on the version the plan was made from; a
  // change in between (a GitOps sync, the controller) makes us plan again.
  for (int tries = 0;; ++tries) {
    auto md = client.Get(v1::kModelDeployments, ns, cl.name);
    if (!md.ok()) return Fail(term, Explain(md.status(), AttemptOn(cl, client, "get", ns)));
    const ActionPlan plan = PlanAction(cl.verb, *md);
    if (!plan.write) {
      term.out << what << ": " << plan.note << "\n";
      return 0;
    }
    auto patched = client.Patch(v1::kModelDeployments, ns, cl.name, kube::PatchType::kMerge,
                                plan.patch, {.field_manager = "kubectl-kiln"});
    if (kube::IsConflict(patched.status()) && tries < 3) continue;
    if (!patched.ok()) {
      return Fail(term, Explain(patched.status(), AttemptOn(cl, client, "patch", ns)));
    }
    term.out << what << ": wrote spec.rollout.action: " << plan.action << " (was " << plan.previous
             << "), generation " << (*patched)["metadata"].value("generation", json(0)).dump()
             << ".\n"
             << "The controller acts on it once: " << plan.note << ".\n"
             << "Under GitOps, commit the same value to Git, or a sync will set it back.\n";
    return 0;
  }
}

int Logs(const CommandLine& cl, kube::Client& client, Terminal& term) {
  const std::string ns = Namespace(cl, client.config());
  auto job = client.Get(v1::kTrainingJobs, ns, cl.name);
  if (!job.ok()) return Fail(term, Explain(job.status(), AttemptOn(cl, client, "get", ns)));
  const int32_t rank = cl.rank.value_or(0);
  auto pod = FindWorkerPod(client, *job, rank);
  if (!pod.ok()) return Fail(term, pod.status().message());
  term.err << "# trainingjob " << cl.name << " rank " << rank << ": pod " << pod->name
           << (pod->cluster.empty() ? " in the hub" : " in member cluster " + pod->cluster) << "\n";
  kube::Client& where = pod->member ? *pod->member : client;
  Status s = ReadWorkerLog(
      where, *pod, {.follow = cl.follow, .tail_lines = cl.tail},
      [&](std::string_view chunk) {
        term.out << chunk;
        term.out.flush();
      },
      term.interrupted);
  if (term.interrupted != nullptr && term.interrupted->load()) return kInterruptedExitCode;
  if (!s.ok()) return Fail(term, s.message());
  return 0;
}

}  // namespace

int RunCommand(const CommandLine& cl, kube::Client& client, Terminal& term) {
  switch (cl.verb) {
    case Verb::kStatus:
      return ShowStatus(cl, client, term);
    case Verb::kWatch:
      return Watch(cl, client, term);
    case Verb::kPromote:
    case Verb::kAbort:
    case Verb::kRollback:
    case Verb::kContinue:
      return RolloutAction(cl, client, term);
    case Verb::kLogs:
      return Logs(cl, client, term);
    case Verb::kHelp:
    case Verb::kVersion:
      break;
  }
  return Fail(term, "internal: no API command for this verb");
}

}  // namespace kiln::plugin
