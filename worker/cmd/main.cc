// kiln-worker: the training and inference engine GPU pods run. Subcommands
// arrive with later issues; today it reports its build and the GPUs it sees.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "base/version.h"
#include "kernels/device.h"

namespace {

constexpr const char* kUsage =
    "Usage: kiln-worker [--help] [--version] <command>\n"
    "\n"
    "The kiln training and inference engine.\n"
    "\n"
    "Commands:\n"
    "  devices     Print the visible GPUs as JSON and probe each with a test kernel.\n"
    "\n"
    "Options:\n"
    "  --help      Show this help and exit.\n"
    "  --version   Print the version and the GPU libraries linked in, and exit.\n"
    "\n"
    "Exit codes: 0 success, 2 usage error, 3 a GPU failed its probe.\n";

int PrintVersion() {
  std::printf("%s\n", kiln::VersionLine("kiln-worker").c_str());
  if (kiln::gpu::BuiltWithCuda()) {
    auto v = kiln::gpu::GetLibraryVersions();
    std::printf("cuda-runtime %s, cuda-driver %s, cublas %s, nccl %s\n", v.cuda_runtime.c_str(),
                v.cuda_driver.empty() ? "none" : v.cuda_driver.c_str(), v.cublas.c_str(),
                v.nccl.c_str());
  }
  return 0;
}

int Devices() {
  nlohmann::json out = {{"builtWithCuda", kiln::gpu::BuiltWithCuda()},
                        {"devices", nlohmann::json::array()}};
  auto devices = kiln::gpu::ListDevices();
  int rc = 0;
  if (!devices.ok()) {
    out["error"] = devices.status().ToString();
  } else {
    for (const auto& d : *devices) {
      kiln::Status probe = kiln::gpu::ProbeDevice(d.index);
      if (!probe.ok()) rc = 3;
      out["devices"].push_back({{"index", d.index},
                                {"name", d.name},
                                {"computeCapability", std::to_string(d.compute_major) + "." +
                                                          std::to_string(d.compute_minor)},
                                {"multiprocessors", d.multiprocessors},
                                {"memoryBytes", d.total_memory_bytes},
                                {"pciBusId", d.pci_bus_id},
                                {"probe", probe.ToString()}});
    }
  }
  std::printf("%s\n", out.dump(2).c_str());
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "--version") return PrintVersion();
  if (cmd == "devices" && argc == 2) return Devices();
  std::fprintf(stderr, "kiln-worker: unknown command or argument '%s'\n\n%s",
               cmd == "devices" ? argv[2] : cmd.c_str(), kUsage);
  return 2;
}
