// Commands: each `kubectl kiln` verb run against an API server — status,
// watch, the rollout actions, logs — writing its result to `out` and its
// errors, as one sentence each, to `err`. Returns the process's exit status
// (command_line.h's Usage states them). The binary's main is a thin wrapper.
// Thread-compatible.
#ifndef KILN_PLUGIN_COMMANDS_H_
#define KILN_PLUGIN_COMMANDS_H_

#include <atomic>
#include <ostream>

#include "kube/client.h"
#include "plugin/command_line.h"

namespace kiln::plugin {

// What a command may use of the process around it.
struct Terminal {
  std::ostream& out;
  std::ostream& err;
  bool out_is_tty = false;  // watch redraws in place only on a terminal.
  // Set by Ctrl-C: watch and logs -f stop.
  const std::atomic<bool>* interrupted = nullptr;
};

// The exit status after an interrupt (128 + SIGINT, as shells report it).
inline constexpr int kInterruptedExitCode = 130;

// Runs `cl` (a verb that needs the API) with `client`.
int RunCommand(const CommandLine& cl, kube::Client& client, Terminal& term);

}  // namespace kiln::plugin

#endif  // KILN_PLUGIN_COMMANDS_H_
