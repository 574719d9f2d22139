// Fuzzes parsing a data manifest (worker/data/manifest.h) and finding its
// splits' shards: every shard path stays in the manifest's folder.
#include <cstdint>
#include <string>
#include <string_view>

#include "worker/data/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  auto manifest = kiln::data::ParseManifest(json, "fuzz");
  if (!manifest.ok()) return 0;
  const std::string folder = "/data/run/";
  for (const char* split : {"train", "val"}) {
    auto paths = kiln::data::ShardPaths(*manifest, folder + "manifest.json", split);
    if (!paths.ok()) continue;
    for (const std::string& path : *paths) {
      const std::string_view name =
          std::string_view(path).substr(path.rfind(folder, 0) == 0 ? folder.size() : 0);
      if (path.rfind(folder, 0) != 0 || name.empty() || name.find('/') != std::string_view::npos ||
          name == "." || name == "..") {
        __builtin_trap();
      }
    }
  }
  // The manifest written back reads the same.
  auto again = kiln::data::ParseManifest(kiln::data::ManifestToJson(*manifest).dump(), "again");
  if (!again.ok()) __builtin_trap();
  return 0;
}
