// Fuzzes a watch stream (kube/watch.h): the bytes cut into chunks where the
// first byte says, split into lines, each line parsed as a watch event.
#include <algorithm>
#include <cstdint>
#include <string_view>

#include "kube/watch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Chunks of 1-256 bytes: the stream arrives in arbitrary pieces.
  const size_t chunk = static_cast<size_t>(data[0]) + 1;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  kiln::kube::LineSplitter splitter;
  int events = 0;
  for (size_t at = 0; at < stream.size(); at += chunk) {
    splitter.Feed(stream.substr(at, std::min(chunk, stream.size() - at)),
                  [&](std::string_view line) {
                    auto event = kiln::kube::ParseWatchEvent(line);
                    if (event.ok()) ++events;
                    return events < 1000;
                  });
  }
  return 0;
}
