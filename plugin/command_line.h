// CommandLine: what `kubectl kiln ...` was asked to do, parsed from its
// arguments with the one flag parser (base/flags.h): the verb, the kind and
// name of the object, and the flags kubectl users expect (--kubeconfig,
// --context, -n/--namespace, -A, -o). Pure; thread-compatible.
#ifndef KILN_PLUGIN_COMMAND_LINE_H_
#define KILN_PLUGIN_COMMAND_LINE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/statusor.h"

namespace kiln::plugin {

enum class Verb { kHelp, kVersion, kStatus, kWatch, kPromote, kAbort, kRollback, kContinue, kLogs };

enum class Kind { kTrainingJob, kModelDeployment };

struct CommandLine {
  Verb verb = Verb::kHelp;
  Kind kind = Kind::kTrainingJob;
  std::string name;  // Empty: every object of the kind (status only).

  std::string kubeconfig;  // --kubeconfig; empty: $KUBECONFIG, then ~/.kube/config.
  std::string context;     // --context; empty: the kubeconfig's current context.
  std::string ns;          // -n; empty: the context's namespace.
  bool all_namespaces = false;
  std::string output;  // -o: "" (the readable view), "json" or "yaml".
  std::optional<int32_t> rank;
  bool follow = false;
  std::optional<int64_t> tail;
};

// The `--help` text.
std::string Usage();

// Parses the arguments after the program name. InvalidArgument saying what
// is wrong ("status needs a kind: trainingjob (tj) or modeldeployment (md)")
// for bad usage; `--help` anywhere gives Verb::kHelp.
StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args);

// "trainingjob", "modeldeployment": the kind as messages name it.
const char* KindName(Kind kind);

// The kind a word names (trainingjob, trainingjobs, tj, modeldeployment,
// modeldeployments, md), or nullopt.
std::optional<Kind> ParseKind(const std::string& word);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_COMMAND_LINE_H_
