#include "runtime/work_queue.h"

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/fake_clock.h"

namespace kiln::runtime {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;

// Waits (bounded) for `pred`; the bound only stops a broken queue hanging the test.
template <typename P>
bool Eventually(P pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

TEST_CASE("keys are deduplicated while queued", "[runtime][workqueue]") {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  q.Add("a");
  CHECK(q.Len() == 2);
  CHECK(*q.Get() == "a");
  CHECK(*q.Get() == "b");
  CHECK(q.Len() == 0);
}

TEST_CASE("a key added while processing comes back only after Done", "[runtime][workqueue]") {
  WorkQueue q;
  q.Add("a");
  auto key = q.Get();
  REQUIRE(key == "a");
  q.Add("a");
  q.Add("a");
  CHECK(q.Len() == 0);  // Not handed to a second worker meanwhile.
  q.Done("a");
  CHECK(q.Len() == 1);  // Exactly once more.
  CHECK(*q.Get() == "a");
  q.Done("a");
  CHECK(q.Len() == 0);
}

TEST_CASE("no key is ever processed by two workers at once", "[runtime][workqueue]") {
  WorkQueue q;
  std::mutex mu;
  std::set<std::string> active;
  std::atomic<int> overlaps{0}, processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.Get()) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (!active.insert(*key).second) ++overlaps;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        {
          std::lock_guard<std::mutex> lock(mu);
          active.erase(*key);
        }
        ++processed;
        q.Done(*key);
      }
    });
  }
  for (int i = 0; i < 4000; ++i) q.Add("key-" + std::to_string(i % 10));
  CHECK(Eventually([&] { return q.Len() == 0; }));
  q.ShutDown();
  for (auto& t : workers) t.join();
  CHECK(overlaps == 0);
  CHECK(processed >= 10);
  CHECK(processed <= 4000);
}

TEST_CASE("failing keys back off exponentially, Forget resets", "[runtime][workqueue]") {
  FakeClock clock;
  WorkQueue q(
      {.base_backoff = milliseconds(10), .max_backoff = milliseconds(100), .overall_qps = 0},
      &clock);
  q.AddRateLimited("a");  // 10 ms
  CHECK(q.Failures("a") == 1);
  CHECK(q.WaitingLen() == 1);
  clock.Advance(milliseconds(9));
  std::this_thread::sleep_for(milliseconds(150));
  CHECK(q.Len() == 0);
  clock.Advance(milliseconds(1));
  CHECK(Eventually([&] { return q.Len() == 1; }));
  q.Done(*q.Get());

  q.AddRateLimited("a");  // 20 ms
  q.AddRateLimited("a");  // 40 ms, but the earlier due time wins.
  clock.Advance(milliseconds(20));
  CHECK(Eventually([&] { return q.Len() == 1; }));
  q.Done(*q.Get());
  CHECK(q.Failures("a") == 3);
  for (int i = 0; i < 10; ++i) q.AddRateLimited("b");  // Capped at max_backoff.
  clock.Advance(milliseconds(100));
  CHECK(Eventually([&] { return q.Len() == 1; }));
  q.Forget("a");
  CHECK(q.Failures("a") == 0);
}

TEST_CASE("the overall bucket limits rate-limited adds across keys", "[runtime][workqueue]") {
  FakeClock clock;
  WorkQueue q({.base_backoff = milliseconds(1), .overall_qps = 10, .overall_burst = 2}, &clock);
  for (int i = 0; i < 4; ++i) q.AddRateLimited("k" + std::to_string(i));
  // Two ride the burst (after the 1 ms per-key backoff); the others wait 100 and 200 ms.
  clock.Advance(milliseconds(1));
  CHECK(Eventually([&] { return q.Len() == 2; }));
  clock.Advance(milliseconds(99));
  CHECK(Eventually([&] { return q.Len() == 3; }));
  clock.Advance(milliseconds(100));
  CHECK(Eventually([&] { return q.Len() == 4; }));
}

TEST_CASE("AddAfter delays, and the earliest request wins", "[runtime][workqueue]") {
  FakeClock clock;
  WorkQueue q({}, &clock);
  q.AddAfter("a", milliseconds(500));
  q.AddAfter("a", milliseconds(100));
  q.AddAfter("a", milliseconds(900));
  CHECK(q.WaitingLen() == 1);
  clock.Advance(milliseconds(100));
  CHECK(Eventually([&] { return q.Len() == 1; }));
  CHECK(q.WaitingLen() == 0);
}

TEST_CASE("shutdown drains ready keys, then releases every worker", "[runtime][workqueue]") {
  WorkQueue q;
  q.Add("a");
  q.Add("b");
  q.AddAfter("later", milliseconds(60000));
  q.ShutDown();
  q.Add("ignored");
  CHECK(*q.Get() == "a");
  CHECK(*q.Get() == "b");
  CHECK_FALSE(q.Get().has_value());
  std::thread blocked([&] { CHECK_FALSE(q.Get().has_value()); });
  blocked.join();
  CHECK(q.shutting_down());
}

}  // namespace
}  // namespace kiln::runtime
