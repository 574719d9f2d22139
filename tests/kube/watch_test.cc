#include "kube/watch.h"

#include <catch2/catch.hpp>

#include "kube/api_error.h"

namespace kiln::kube {
namespace {

TEST_CASE("lines are reassembled across arbitrary chunk boundaries", "[kube][watch]") {
  std::string stream = "{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n";
  for (size_t cut = 1; cut < stream.size(); ++cut) {
    LineSplitter s;
    std::vector<std::string> lines;
    auto collect = [&](std::string_view l) {
      lines.emplace_back(l);
      return true;
    };
    s.Feed(stream.substr(0, cut), collect);
    s.Feed(stream.substr(cut), collect);
    CHECK(lines == std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"});
  }
  LineSplitter partial;
  int n = 0;
  partial.Feed("{\"x\":1}\n{\"y\"", [&](std::string_view) { return ++n, true; });
  CHECK(n == 1);  // The unterminated line waits for its newline.
}

TEST_CASE("watch events parse, and ERROR events become typed errors", "[kube][watch]") {
  auto added = ParseWatchEvent(R"({"type":"ADDED","object":{"metadata":{"name":"a"}}})");
  REQUIRE(added.ok());
  CHECK(added->type == EventType::kAdded);
  CHECK(added->object["metadata"]["name"] == "a");
  CHECK(ParseWatchEvent(R"({"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}})")
            ->type == EventType::kBookmark);
  auto gone = ParseWatchEvent(
      R"json({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",
              "message":"too old resource version: 5 (90)"}})json");
  REQUIRE_FALSE(gone.ok());
  CHECK(IsResourceExpired(gone.status()));
  CHECK(ParseWatchEvent("not json").status().code() == StatusCode::kInternal);
  CHECK(ParseWatchEvent(R"({"type":"SURPRISE","object":{}})").status().code() ==
        StatusCode::kInternal);
}

// Found by fuzz/watch_fuzz.cc: a field of the wrong type threw out of the
// informer's thread (std::terminate) instead of failing the event.
TEST_CASE("watch events with fields of the wrong type are errors, not exceptions",
          "[kube][watch]") {
  CHECK(ParseWatchEvent(R"({"type":7,"object":{}})").status().code() == StatusCode::kInternal);
  auto reason_number = ParseWatchEvent(
      R"({"type":"ERROR","object":{"kind":"Status","message":"too old","reason":410}})");
  REQUIRE_FALSE(reason_number.ok());
  CHECK(reason_number.status().code() == StatusCode::kUnavailable);  // No code: a server error.
  auto code_string = ParseWatchEvent(R"({"type":"ERROR","object":{"code":"410"}})");
  REQUIRE_FALSE(code_string.ok());
  CHECK(GetApiError(code_string.status())->http_code == 500);
  auto not_status = ParseWatchEvent(R"({"type":"ERROR","object":[1,2]})");
  REQUIRE_FALSE(not_status.ok());
  CHECK(GetApiError(not_status.status())->http_code == 500);
  auto code_out_of_range = ParseWatchEvent(R"({"type":"ERROR","object":{"code":4294967706}})");
  REQUIRE_FALSE(code_out_of_range.ok());
  CHECK(GetApiError(code_out_of_range.status())->http_code == 500);
}

}  // namespace
}  // namespace kiln::kube
