#include "runtime/cache_reader.h"

#include <thread>

#include <catch2/catch.hpp>

#include "kube/informer.h"
#include "runtime/fake_reader.h"
#include "runtime/typed_reader.h"
#include "tests/runtime/fake_cluster.h"

namespace kiln::runtime {
namespace {

using nlohmann::json;
using testing::FakeCluster;
using testing::Obj;
using testing::OwnerRef;

std::vector<std::string> ByNodeName(const json& pod) {
  auto spec = pod.find("spec");
  if (spec == pod.end() || !spec->contains("nodeName")) return {};
  return {(*spec)["nodeName"].get<std::string>()};
}

json Pod(const std::string& ns, const std::string& name, json labels, const std::string& node,
         json owners = nullptr) {
  json p = Obj(ns, name, std::move(labels), std::move(owners));
  if (!node.empty()) p["spec"]["nodeName"] = node;
  return p;
}

std::vector<json> Pods() {
  const json job =
      json::array({OwnerRef("kiln.dev/v1alpha1", "TrainingJob", "j1", "uid-j1", true)});
  return {Pod("a", "p1", {{"app", "train"}, {"rank", "0"}}, "node-1", job),
          Pod("a", "p2", {{"app", "train"}, {"rank", "1"}}, "node-2", job),
          Pod("a", "p3", {{"app", "serve"}}, "node-1"),
          Pod("b", "p4", {{"app", "train"}}, "node-1"), Pod("b", "p5", json::object(), "")};
}

std::vector<std::string> Names(const StatusOr<std::vector<kube::Object>>& objs) {
  REQUIRE(objs.ok());
  std::vector<std::string> out;
  for (const auto& o : *objs) out.push_back(kube::Store::KeyOf(*o));
  return out;
}

ListFilter Labels(const std::string& selector, const std::string& ns = "") {
  auto s = kube::LabelSelector::Parse(selector);
  REQUIRE(s.ok());
  return {.ns = ns, .labels = *s};
}

// The same questions, with the same answers, whatever the Reader is.
void CheckReads(const Reader& r) {
  auto p1 = r.Get("a", "p1");
  REQUIRE(p1.ok());
  CHECK((**p1)["spec"]["nodeName"] == "node-1");
  CHECK(r.Get("a", "nope").status().code() == StatusCode::kNotFound);
  CHECK(r.Get("b", "p1").status().code() == StatusCode::kNotFound);

  using V = std::vector<std::string>;
  CHECK(Names(r.List()) == V{"a/p1", "a/p2", "a/p3", "b/p4", "b/p5"});
  CHECK(Names(r.List({.ns = "b"})) == V{"b/p4", "b/p5"});
  CHECK(Names(r.List(Labels("app=train"))) == V{"a/p1", "a/p2", "b/p4"});
  CHECK(Names(r.List(Labels("app=train", "a"))) == V{"a/p1", "a/p2"});
  CHECK(Names(r.List(Labels("app!=train"))) == V{"a/p3", "b/p5"});
  CHECK(Names(r.List(Labels("app in (serve, eval)"))) == V{"a/p3"});
  CHECK(Names(r.List(Labels("rank"))) == V{"a/p1", "a/p2"});
  CHECK(Names(r.List(Labels("!app"))) == V{"b/p5"});
  CHECK(Names(r.List({.index = "spec.nodeName", .index_value = "node-1"})) ==
        V{"a/p1", "a/p3", "b/p4"});
  CHECK(Names(r.List({.ns = "a",
                      .labels = Labels("app=train").labels,
                      .index = "spec.nodeName",
                      .index_value = "node-1"})) == V{"a/p1"});
  CHECK(Names(r.List({.index = kube::kIndexOwner, .index_value = "uid-j1"})) == V{"a/p1", "a/p2"});
  CHECK(Names(r.List({.index = "spec.nodeName", .index_value = "node-9"})).empty());
  CHECK(r.List({.index = "no-such-index", .index_value = "x"}).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("the fake reader answers Get, List, selectors and indexes", "[runtime][reader]") {
  FakeReader fake(Pods());
  REQUIRE(fake.AddIndex("spec.nodeName", ByNodeName).ok());
  CheckReads(fake);
  fake.Delete("a", "p1");
  CHECK(fake.Get("a", "p1").status().code() == StatusCode::kNotFound);
  fake.Put(Pod("a", "p1", {{"app", "eval"}}, "node-3"));
  CHECK(Names(fake.List({.index = "spec.nodeName", .index_value = "node-3"})) ==
        std::vector<std::string>{"a/p1"});
}

TEST_CASE("the cache reader answers the same over a real informer's store", "[runtime][reader]") {
  FakeCluster cluster;
  cluster.ListReturns(Pods());
  kube::Informer informer(*cluster.client, kube::resources::kPods);
  REQUIRE(informer.AddIndex("spec.nodeName", ByNodeName).ok());
  CacheReader reader(informer);
  // Not synced yet: reads are refused rather than answered from nothing.
  CHECK(reader.Get("a", "p1").status().code() == StatusCode::kUnavailable);
  CHECK(reader.List().status().code() == StatusCode::kUnavailable);
  informer.Start();
  REQUIRE(informer.WaitForSync(std::chrono::seconds(30)));
  CheckReads(reader);

  // A watch event moves p3 to another node: the index follows.
  json moved = Pod("a", "p3", {{"app", "serve"}}, "node-2");
  moved["metadata"]["resourceVersion"] = "2";
  cluster.WatchSends({{"MODIFIED", moved}});
  for (int i = 0; i < 500; ++i) {
    auto on2 = reader.List({.index = "spec.nodeName", .index_value = "node-2"});
    if (on2.ok() && on2->size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(Names(reader.List({.index = "spec.nodeName", .index_value = "node-2"})) ==
        std::vector<std::string>{"a/p2", "a/p3"});
  informer.Stop();
}

struct Labelled {
  std::string name;
  std::string app;
};
void from_json(const json& j, Labelled& out) {
  out.name = j.at("metadata").at("name").get<std::string>();
  out.app = j.at("metadata").at("labels").at("app").get<std::string>();
}

TEST_CASE("a typed reader decodes, and names the object that does not", "[runtime][reader]") {
  FakeReader fake(Pods());
  TypedReader<Labelled> typed(fake);
  auto p1 = typed.Get("a", "p1");
  REQUIRE(p1.ok());
  CHECK(p1->app == "train");
  auto train = typed.List(Labels("app=train"));
  REQUIRE(train.ok());
  CHECK(train->size() == 3);
  CHECK(typed.Get("a", "missing").status().code() == StatusCode::kNotFound);
  auto bad = typed.Get("b", "p5");  // No app label.
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad.status().message(), Catch::Contains("b/p5"));
  CHECK(typed.List().status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::runtime
