// kubectl-kiln: the kubectl plugin for kiln (`kubectl kiln ...`). A thin main:
// parses the command line, loads the kubeconfig as kubectl does and runs the
// command (plugin/commands.h).
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>

#include "base/flags.h"
#include "base/stop_signal.h"
#include "base/version.h"
#include "kube/client.h"
#include "plugin/command_line.h"
#include "plugin/commands.h"
#include "plugin/connection.h"

int main(int argc, char** argv) {
  using namespace kiln::plugin;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto cl = ParseCommandLine(args);
  if (!cl.ok()) {
    std::cerr << "error: " << cl.status().message() << "\n\n" << Usage();
    return kiln::kUsageExitCode;
  }
  if (cl->verb == Verb::kHelp) {
    std::cout << Usage();
    return 0;
  }
  if (cl->verb == Verb::kVersion) {
    std::cout << kiln::VersionLine("kubectl-kiln") << "\n";
    return 0;
  }
  auto config = LoadConfig(*cl, Environment::FromProcess());
  if (!config.ok()) {
    std::cerr << "error: " << config.status().message() << "\n";
    return 1;
  }
  auto client = kiln::kube::Client::New(
      *config, {.user_agent = std::string("kubectl-kiln/") + kiln::Version()});
  if (!client.ok()) {
    std::cerr << "error: " << client.status().message() << "\n";
    return 1;
  }
  // Ctrl-C ends watch and logs -f cleanly; other commands are short.
  kiln::StopSignal& stop = kiln::StopSignal::Install();
  Terminal term{std::cout, std::cerr, isatty(STDOUT_FILENO) == 1, &stop.requested()};
  try {
    return RunCommand(*cl, **client, term);
  } catch (const std::exception& e) {
    // The views read objects the API server validated against kiln's CRDs;
    // one that still surprises them (another version of kiln) ends here,
    // with a sentence rather than a crash.
    std::cerr << "error: unexpected data from the API server: " << e.what() << "\n";
    return 1;
  }
}
