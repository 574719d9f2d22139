// kiln-operator: reconciles kiln.dev TrainingJob, ModelDeployment and
// MemberCluster resources. The controllers arrive with later issues; this binary
// carries the command-line contract packaging and tests rely on.
#include <cstdio>
#include <cstring>
#include <string>

#include "base/version.h"

namespace {

constexpr const char* kUsage =
    "Usage: kiln-operator [--help] [--version]\n"
    "\n"
    "Runs the kiln operator, which gang-schedules GPU training jobs across member\n"
    "clusters and rolls out model versions gradually.\n"
    "\n"
    "Options:\n"
    "  --help      Show this help and exit.\n"
    "  --version   Print the version and exit.\n";

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("%s\n", kiln::VersionLine("kiln-operator").c_str());
      return 0;
    }
    std::fprintf(stderr, "kiln-operator: unknown argument '%s'\n\n%s", arg.c_str(), kUsage);
    return 2;
  }
  std::fputs("kiln-operator: no controllers are implemented in this build yet; see --help\n",
             stderr);
  return 2;
}
