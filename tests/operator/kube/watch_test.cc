#include "operator/kube/watch.h"

#include <catch2/catch.hpp>

#include "operator/kube/api_error.h"
#include "operator/kube/store.h"

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

Object Obj(const std::string& ns, const std::string& name, nlohmann::json labels,
           const std::string& owner = "") {
  nlohmann::json o = {{"metadata", {{"name", name}, {"labels", labels}}}};
  if (!ns.empty()) o["metadata"]["namespace"] = ns;
  if (!owner.empty()) o["metadata"]["ownerReferences"] = {{{"uid", owner}}};
  return std::make_shared<const nlohmann::json>(o);
}

TEST_CASE("the store keeps its indexes in step with upserts and removals", "[kube][store]") {
  Store s;
  s.AddIndex("gpu-model", [](const nlohmann::json& o) {
    return std::vector<std::string>{o["metadata"]["labels"].value("gpu", "none")};
  });
  s.Upsert(Obj("a", "p1", {{"app", "train"}, {"gpu", "h100"}}, "job-1"));
  s.Upsert(Obj("a", "p2", {{"app", "train"}}, "job-1"));
  s.Upsert(Obj("b", "p3", {{"app", "serve"}, {"gpu", "h100"}}));
  s.Upsert(Obj("", "node-1", {{"gpu", "h200"}}));
  CHECK(s.size() == 4);
  CHECK(s.Get("a/p1") != nullptr);
  CHECK(s.Get("node-1") != nullptr);
  CHECK(s.ByIndex(kIndexNamespace, "a").size() == 2);
  CHECK(s.ByIndex(kIndexOwner, "job-1").size() == 2);
  CHECK(s.ByIndex(kIndexLabel, "app=train").size() == 2);
  CHECK(s.ByIndex("gpu-model", "h100").size() == 2);
  CHECK(s.ByIndex("no-such-index", "x").empty());

  // Relabelling moves the object between index values.
  auto old = s.Upsert(Obj("a", "p1", {{"app", "serve"}, {"gpu", "h200"}}, "job-1"));
  REQUIRE(old != nullptr);
  CHECK(s.ByIndex(kIndexLabel, "app=train").size() == 1);
  CHECK(s.ByIndex(kIndexLabel, "app=serve").size() == 2);
  CHECK(s.ByIndex("gpu-model", "h200").size() == 2);

  CHECK(s.Remove("a/p2") != nullptr);
  CHECK(s.Remove("a/p2") == nullptr);
  CHECK(s.ByIndex(kIndexOwner, "job-1").size() == 1);
  CHECK(s.ByIndex(kIndexLabel, "app=train").empty());
  CHECK(s.size() == 3);
}

}  // namespace
}  // namespace kiln::kube
