#include "plugin/command_line.h"

#include <limits>
#include <memory>

#include "base/flags.h"

namespace kiln::plugin {
namespace {

constexpr const char* kSynopsis =
    R"(kubectl kiln: inspect and steer kiln TrainingJobs and ModelDeployments.

Usage:
  kubectl kiln status (trainingjob|tj) [NAME] [-o json|yaml]
  kubectl kiln status (modeldeployment|md) [NAME] [-o json|yaml]
      Phase, progress, checkpoints, restarts and placement of a TrainingJob;
      versions, weights, steps, analysis runs and rollbacks of a
      ModelDeployment. Without NAME, one line per object (-A: all namespaces).
  kubectl kiln watch (tj|md) NAME
      The status view, redrawn on every change until the object reaches a
      terminal phase (TrainingJob Succeeded or Failed; ModelDeployment Healthy,
      Degraded, Aborted or RolledBack) or Ctrl-C. Not on a terminal: one block
      per change.
  kubectl kiln promote|abort|rollback|continue [md] NAME
      Writes spec.rollout.action of the ModelDeployment (a merge patch, as a
      GitOps commit would) and says what it wrote. An action acts once, when
      it changes.
  kubectl kiln logs [tj] NAME [--rank N] [-f] [--tail N]
      A worker's log (rank 0 unless --rank), from the hub or from the member
      cluster the worker was placed on.
  kubectl kiln version
)";

constexpr const char* kEpilogue =
    R"(Exit status: 0 on success (watch: the object ended Succeeded or Healthy), 1 on
an error or when a watched object ended Failed, Degraded, Aborted or
RolledBack, 2 for bad usage, 130 after Ctrl-C.
)";

struct Values {
  std::string kubeconfig, context, ns, output;
  bool all_namespaces = false, follow = false;
  int32_t rank = -1;
  int64_t tail = -1;
};

std::unique_ptr<FlagSet> Define(Values& v) {
  auto f = std::make_unique<FlagSet>("kubectl kiln", kSynopsis, kEpilogue);
  f->Section("Connection:");
  f->String("kubeconfig", &v.kubeconfig, "The kubeconfig file.")
      .Metavar("FILE")
      .DefaultText("$KUBECONFIG, then ~/.kube/config");
  f->String("context", &v.context, "The kubeconfig context.")
      .Metavar("NAME")
      .DefaultText("the current context");
  f->String("namespace", &v.ns, "The object's namespace.")
      .Short('n')
      .Metavar("NS")
      .DefaultText("the context's, else default");
  f->Section("status:");
  f->Bool("all-namespaces", &v.all_namespaces, "List the objects of every namespace (no NAME).")
      .Short('A');
  f->Enum("output", &v.output, {"json", "yaml"}, "Print the object as the API returns it.")
      .Short('o');
  f->Section("logs:");
  f->Int("rank", &v.rank, int32_t{0}, std::numeric_limits<int32_t>::max(), "The worker's rank.")
      .DefaultText("0");
  f->Bool("follow", &v.follow, "Stream the log as it grows.").Short('f');
  f->Int("tail", &v.tail, int64_t{0}, std::numeric_limits<int64_t>::max(), "Only the last N lines.")
      .DefaultText("all");
  return f;
}

std::optional<Verb> ParseVerb(const std::string& word) {
  if (word == "status" || word == "get") return Verb::kStatus;
  if (word == "watch") return Verb::kWatch;
  if (word == "promote") return Verb::kPromote;
  if (word == "abort") return Verb::kAbort;
  if (word == "rollback" || word == "undo") return Verb::kRollback;
  if (word == "continue") return Verb::kContinue;
  if (word == "logs") return Verb::kLogs;
  if (word == "version") return Verb::kVersion;
  if (word == "help") return Verb::kHelp;
  return std::nullopt;
}

// Which verbs each verb-specific flag belongs to, for the error when it is
// given to another.
Status CheckFlagsFit(const FlagSet& flags, Verb verb) {
  struct Rule {
    const char* flag;
    std::vector<Verb> verbs;
    const char* text;
  };
  const Rule rules[] = {
      {"all-namespaces", {Verb::kStatus}, "status without a NAME"},
      {"output", {Verb::kStatus}, "status"},
      {"rank", {Verb::kLogs}, "logs"},
      {"follow", {Verb::kLogs}, "logs"},
      {"tail", {Verb::kLogs}, "logs"},
  };
  for (const auto& r : rules) {
    if (!flags.IsSet(r.flag)) continue;
    bool fits = false;
    for (Verb v : r.verbs) fits = fits || v == verb;
    if (!fits) return Status::InvalidArgument(std::string("--") + r.flag + " applies to " + r.text);
  }
  return Status::Ok();
}

}  // namespace

const char* KindName(Kind kind) {
  return kind == Kind::kTrainingJob ? "trainingjob" : "modeldeployment";
}

std::optional<Kind> ParseKind(const std::string& word) {
  if (word == "trainingjob" || word == "trainingjobs" || word == "tj") return Kind::kTrainingJob;
  if (word == "modeldeployment" || word == "modeldeployments" || word == "md") {
    return Kind::kModelDeployment;
  }
  return std::nullopt;
}

std::string Usage() {
  Values v;
  return Define(v)->Usage();
}

StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--") break;
    if (a == "--help" || a == "-h") return CommandLine{};  // kHelp.
  }
  Values v;
  std::unique_ptr<FlagSet> flags = Define(v);
  std::vector<std::string> words;
  flags->Positionals(&words);
  std::vector<std::string> copies = args;
  std::vector<char*> argv;
  for (auto& a : copies) argv.push_back(a.data());
  KILN_RETURN_IF_ERROR(flags->Parse(static_cast<int>(argv.size()), argv.data(), 0));

  CommandLine cl;
  if (words.empty()) return cl;  // kHelp.
  std::optional<Verb> verb = ParseVerb(words[0]);
  if (!verb) {
    return Status::InvalidArgument("unknown command \"" + words[0] +
                                   "\"; want status, watch, promote, abort, rollback, continue, "
                                   "logs or version");
  }
  cl.verb = *verb;
  KILN_RETURN_IF_ERROR(CheckFlagsFit(*flags, cl.verb));
  cl.kubeconfig = v.kubeconfig;
  cl.context = v.context;
  cl.ns = v.ns;
  cl.all_namespaces = v.all_namespaces;
  cl.output = v.output;
  cl.follow = v.follow;
  if (flags->IsSet("rank")) cl.rank = v.rank;
  if (flags->IsSet("tail")) cl.tail = v.tail;

  std::vector<std::string> rest(words.begin() + 1, words.end());
  const std::string verb_word = words[0];
  switch (cl.verb) {
    case Verb::kHelp:
    case Verb::kVersion:
      if (!rest.empty()) return Status::InvalidArgument(verb_word + " takes no arguments");
      return cl;
    case Verb::kStatus:
    case Verb::kWatch: {
      if (rest.empty()) {
        return Status::InvalidArgument(verb_word +
                                       " needs a kind: trainingjob (tj) or modeldeployment (md)");
      }
      std::optional<Kind> kind = ParseKind(rest[0]);
      if (!kind) {
        return Status::InvalidArgument("unknown kind \"" + rest[0] +
                                       "\"; want trainingjob (tj) or modeldeployment (md)");
      }
      cl.kind = *kind;
      if (rest.size() > 2) return Status::InvalidArgument(verb_word + " takes one NAME");
      if (rest.size() == 2) cl.name = rest[1];
      if (cl.verb == Verb::kWatch && cl.name.empty()) {
        return Status::InvalidArgument("watch needs a NAME");
      }
      if (cl.all_namespaces && !cl.name.empty()) {
        return Status::InvalidArgument("-A lists every object; give no NAME with it");
      }
      return cl;
    }
    case Verb::kPromote:
    case Verb::kAbort:
    case Verb::kRollback:
    case Verb::kContinue:
    case Verb::kLogs: {
      const Kind want = cl.verb == Verb::kLogs ? Kind::kTrainingJob : Kind::kModelDeployment;
      cl.kind = want;
      if (rest.size() == 2) {
        std::optional<Kind> kind = ParseKind(rest[0]);
        if (kind != want) {
          return Status::InvalidArgument(verb_word + " applies to a " + KindName(want) +
                                         ", not \"" + rest[0] + "\"");
        }
        rest.erase(rest.begin());
      }
      if (rest.size() != 1) {
        return Status::InvalidArgument(verb_word + " needs one NAME of a " + KindName(want));
      }
      cl.name = rest[0];
      return cl;
    }
  }
  return cl;
}

}  // namespace kiln::plugin
