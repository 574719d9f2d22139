// Fuzzes kubeconfig parsing (kube/kubeconfig.h): YAML text to a RestConfig,
// for the file's current context and for two contexts it may name.
#include <cstdint>
#include <string>

#include "kube/kubeconfig.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // Files a kubeconfig names are read from disk; device files (/dev/zero
  // never ends, /dev/stdin waits) test the OS, not the parser.
  if (text.find("/dev/") != std::string::npos || text.find("/proc/") != std::string::npos) {
    return 0;
  }
  for (const char* context : {"", "kiln-1", "default"}) {
    // Any Status is a fine answer: only crashes, leaks and hangs count. A
    // folder that does not exist: relative references are simply not found.
    auto config = kiln::kube::ParseKubeconfig(text, "/nonexistent/kiln-fuzz", context, "fuzz");
    // A config always has an http(s):// server.
    if (config.ok() && config->server.rfind("http", 0) != 0) __builtin_trap();
  }
  return 0;
}
