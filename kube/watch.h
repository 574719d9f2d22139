// Watch: one watch request over the API's chunked stream of newline-delimited
// JSON events. Used by Informer, which adds re-listing and reconnection.
// Stateless functions; thread-safe.
#ifndef KILN_KUBE_WATCH_H_
#define KILN_KUBE_WATCH_H_

#include <atomic>
#include <functional>
#include <string>

#include "kube/client.h"

namespace kiln::kube {

enum class EventType { kAdded, kModified, kDeleted, kBookmark };

struct WatchEvent {
  EventType type;
  json object;
};

struct WatchOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;  // Start after this version.
  int timeout_seconds = 300;     // The server ends the stream after this; callers rotate.
  bool allow_bookmarks = true;
};

// Splits a byte stream into lines; feed chunks, take complete lines.
class LineSplitter {
 public:
  // Appends `chunk` and calls `on_line` for every complete line (without the
  // newline); stops early and returns false when `on_line` does.
  bool Feed(std::string_view chunk, const std::function<bool(std::string_view)>& on_line);

 private:
  std::string pending_;
};

// Parses one line of a watch stream. An ERROR event becomes the Status it
// carries (IsResourceExpired for 410 Gone).
StatusOr<WatchEvent> ParseWatchEvent(std::string_view line);

// Runs one watch until the server ends it, `on_event` returns false, `*cancel`
// is set, or an error (including an ERROR event) occurs. Returns ok on a
// normal end.
Status WatchOnce(Client& client, const Resource& resource, const std::string& ns,
                 const WatchOptions& options, const std::function<bool(WatchEvent&)>& on_event,
                 const std::atomic<bool>* cancel);

}  // namespace kiln::kube

#endif  // KILN_KUBE_WATCH_H_
