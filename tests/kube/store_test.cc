#include "kube/store.h"

#include <catch2/catch.hpp>

namespace kiln::kube {
namespace {

Object Obj(const std::string& ns, const std::string& name, nlohmann::json labels,
           const std::string& owner = "") {
  nlohmann::json o = {{"metadata", {{"name", name}, {"labels", labels}}}};
  if (!ns.empty()) o["metadata"]["namespace"] = ns;
  if (!owner.empty()) o["metadata"]["ownerReferences"] = {{{"uid", owner}}};
  return std::make_shared<const nlohmann::json>(o);
}

TEST_CASE("the store keeps its indexes in step with upserts and removals", "[kube][store]") {
  Store s;
  REQUIRE(s.AddIndex("gpu-model", [](const nlohmann::json& o) {
             return std::vector<std::string>{o["metadata"]["labels"].value("gpu", "none")};
           }).ok());
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

std::vector<std::string> ByGpu(const nlohmann::json& o) {
  return {o["metadata"]["labels"].value("gpu", "none")};
}
std::vector<std::string> ByApp(const nlohmann::json& o) {
  return {o["metadata"]["labels"].value("app", "none")};
}

TEST_CASE("an index name is registered once", "[kube][store]") {
  Store s;
  s.Upsert(Obj("a", "p1", {{"gpu", "h100"}}));
  REQUIRE(s.AddIndex("gpu", ByGpu).ok());
  CHECK(s.ByIndex("gpu", "h100").size() == 1);  // Objects already held are filed.
  CHECK(s.AddIndex("gpu", ByGpu).ok());         // The same function again: a no-op.
  CHECK(s.AddIndex("gpu", ByApp).code() == StatusCode::kAlreadyExists);
  // A lambda cannot be told apart from another, so a second one is refused too.
  auto lambda = [](const nlohmann::json&) { return std::vector<std::string>{"x"}; };
  REQUIRE(s.AddIndex("by-lambda", lambda).ok());
  CHECK(s.AddIndex("by-lambda", lambda).code() == StatusCode::kAlreadyExists);
  CHECK(s.AddIndex(kIndexOwner, ByGpu).code() == StatusCode::kAlreadyExists);
  CHECK(s.ByIndex("gpu", "h100").size() == 1);  // The first registration stands.
  CHECK(s.HasIndex("gpu"));
  CHECK_FALSE(s.HasIndex("nope"));
}

}  // namespace
}  // namespace kiln::kube
