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

}  // namespace
}  // namespace kiln::kube
