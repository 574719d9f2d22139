#include "kube/watch.h"

#include "kube/api_error.h"

namespace kiln::kube {

bool LineSplitter::Feed(std::string_view chunk,
                        const std::function<bool(std::string_view)>& on_line) {
  pending_.append(chunk);
  size_t start = 0;
  while (true) {
    size_t nl = pending_.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(pending_.data() + start, nl - start);
    start = nl + 1;
    if (!line.empty() && !on_line(line)) {
      pending_.erase(0, start);
      return false;
    }
  }
  pending_.erase(0, start);
  return true;
}

StatusOr<WatchEvent> ParseWatchEvent(std::string_view line) {
  auto doc = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("type") || !doc.contains("object")) {
    return Status::Internal("malformed watch event: " + std::string(line.substr(0, 200)));
  }
  if (!doc["type"].is_string()) {
    return Status::Internal("malformed watch event (type is not a string): " +
                            std::string(line.substr(0, 200)));
  }
  std::string type = doc["type"].get<std::string>();
  if (type == "ERROR") {
    const json& st = doc["object"];
    HttpResponse synthetic;
    // An ERROR event's object is a metav1.Status; without a usable code it
    // counts as a server error.
    const bool has_code = st.is_object() && st.contains("code") && st["code"].is_number_integer() &&
                          st["code"].get<int64_t>() >= 100 && st["code"].get<int64_t>() <= 599;
    synthetic.status = has_code ? st["code"].get<int>() : 500;
    synthetic.body = st.dump();
    return ErrorFromResponse(synthetic, "watch");
  }
  WatchEvent ev;
  if (type == "ADDED") {
    ev.type = EventType::kAdded;
  } else if (type == "MODIFIED") {
    ev.type = EventType::kModified;
  } else if (type == "DELETED") {
    ev.type = EventType::kDeleted;
  } else if (type == "BOOKMARK") {
    ev.type = EventType::kBookmark;
  } else {
    return Status::Internal("unknown watch event type " + type);
  }
  ev.object = std::move(doc["object"]);
  return ev;
}

Status WatchOnce(Client& client, const Resource& resource, const std::string& ns,
                 const WatchOptions& o, const std::function<bool(WatchEvent&)>& on_event,
                 const std::atomic<bool>* cancel) {
  std::string query;
  AppendQuery(query, "watch", "1");
  AppendQuery(query, "labelSelector", o.label_selector);
  AppendQuery(query, "fieldSelector", o.field_selector);
  AppendQuery(query, "resourceVersion", o.resource_version);
  AppendQuery(query, "timeoutSeconds", std::to_string(o.timeout_seconds));
  if (o.allow_bookmarks) AppendQuery(query, "allowWatchBookmarks", "true");
  const std::string path = resource.Path(ns) + query;

  HttpRequest req;
  req.path = path;
  // The server stays silent between events and bookmarks (about one a minute),
  // so the inactivity limit must exceed both that and the watch's own timeout.
  req.timeout = std::chrono::seconds(o.timeout_seconds + 30);

  Status result;
  HttpResponse head;
  std::string error_body;
  LineSplitter lines;
  Status stream = client.Stream(
      req, [&](const HttpResponse& h) { head = h; },
      [&](std::string_view chunk) {
        if (head.status != 200) {
          error_body.append(chunk);
          return true;
        }
        return lines.Feed(chunk, [&](std::string_view line) {
          auto ev = ParseWatchEvent(line);
          if (!ev.ok()) {
            result = ev.status();
            return false;
          }
          return on_event(*ev);
        });
      },
      cancel);
  if (!stream.ok()) return stream;
  if (head.status != 200) {
    head.body = error_body;
    return ErrorFromResponse(head, "GET " + path);
  }
  return result;
}

}  // namespace kiln::kube
