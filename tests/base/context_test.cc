#include "base/context.h"

#include <thread>

#include <catch2/catch.hpp>

namespace kiln {
namespace {

using namespace std::chrono_literals;

TEST_CASE("a default context is never done", "[base][context]") {
  Context ctx;
  CHECK_FALSE(ctx.done());
  CHECK_FALSE(ctx.deadline().has_value());
  CHECK(ctx.Err().ok());
  CHECK(ctx.Sleep(1ms));
  CHECK(ctx.Remaining(5s) == 5s);
}

TEST_CASE("a stop ends a context's wait at once and says why", "[base][context]") {
  std::stop_source stop;
  Context ctx(stop.get_token(), std::nullopt);
  std::thread stopper([&] {
    std::this_thread::sleep_for(20ms);
    stop.request_stop();
  });
  // An hour-long wait ends with the stop (the test's own timeout bounds it).
  CHECK_FALSE(ctx.Sleep(std::chrono::hours(1)));
  stopper.join();
  CHECK(ctx.done());
  CHECK(ctx.stopped());
  CHECK(ctx.Err().code() == StatusCode::kCancelled);
  CHECK(ctx.Remaining(5s) == 0ms);
}

TEST_CASE("a deadline ends a context, and timeouts only shorten it", "[base][context]") {
  std::stop_source stop;
  Context ctx = Context(stop.get_token(), std::nullopt).WithTimeout(30ms);
  REQUIRE(ctx.deadline().has_value());
  CHECK(ctx.Remaining(std::chrono::hours(1)) <= 30ms);
  CHECK(ctx.Remaining(1ms) == 1ms);
  CHECK(ctx.WithTimeout(std::chrono::hours(1)).deadline() == ctx.deadline());
  CHECK(ctx.WithTimeout(1ms).deadline() < ctx.deadline());
  CHECK_FALSE(ctx.Sleep(std::chrono::hours(1)));
  CHECK(ctx.done());
  CHECK_FALSE(ctx.stopped());
  CHECK(ctx.Err().code() == StatusCode::kDeadlineExceeded);
  // Copies share the stop signal.
  Context copy = ctx;
  stop.request_stop();
  CHECK(copy.stopped());
}

TEST_CASE("a scoped context is the thread's current one, and scopes nest", "[base][context]") {
  CHECK(Context::Current() == nullptr);
  std::stop_source outer_stop;
  {
    ScopedContext outer(Context(outer_stop.get_token(), std::nullopt));
    REQUIRE(Context::Current() != nullptr);
    CHECK_FALSE(Context::Current()->deadline().has_value());
    {
      ScopedContext inner(Context().WithTimeout(5s));
      REQUIRE(Context::Current() != nullptr);
      CHECK(Context::Current()->deadline().has_value());
      // Another thread has its own (no) current context.
      bool other_has_one = true;
      std::thread([&] { other_has_one = Context::Current() != nullptr; }).join();
      CHECK_FALSE(other_has_one);
    }
    CHECK_FALSE(Context::Current()->deadline().has_value());
    outer_stop.request_stop();
    CHECK(Context::Current()->stopped());
  }
  CHECK(Context::Current() == nullptr);
}

}  // namespace
}  // namespace kiln
