// The TCP communicator with every rank a thread of this process, over real
// loopback sockets: the ring all-reduce and broadcast are exact and leave all
// ranks bitwise identical; the rendezvous refuses mismatched ranks on both
// sides; a peer that dies or hangs fails the others with a
// CommunicationFault instead of a hang.
#include "worker/dist/tcp_communicator.h"

#include <functional>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/http_probe.h"

namespace kiln::dist {
namespace {

using std::chrono::milliseconds;

TcpOptions Options(int rank, int world, int port) {
  TcpOptions o;
  o.env = {.rank = rank, .world_size = world, .master_addr = "127.0.0.1", .master_port = port};
  o.timeout = milliseconds(10000);
  o.rendezvous_timeout = milliseconds(20000);
  o.config = {{"model", "test"}, {"batch", 4}};
  return o;
}

// Catch's CHECK is not thread-safe (ThreadSanitizer reported it): rank
// threads record what failed with Expect, and RunRanks reports it on the
// test's thread.
std::mutex failures_mu;
std::vector<std::string> failures;

void Expect(bool ok, const std::string& what) {
  if (ok) return;
  std::lock_guard<std::mutex> lock(failures_mu);
  failures.push_back(what);
}

// Runs `body` on `world` ranks (threads), each with its connected
// communicator, or with the connection's error when `body_on_error` is set.
void RunRanks(int world, const std::function<void(int, Communicator&)>& body,
              const std::function<TcpOptions(int, int)>& options = {}) {
  const int port = testing::FreePort();
  REQUIRE(port > 0);
  failures.clear();
  std::vector<Status> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = ConnectTcp(options ? options(r, port) : Options(r, world, port));
      if (!comm.ok()) {
        errors[static_cast<size_t>(r)] = comm.status();
        return;
      }
      body(r, **comm);
    });
  }
  for (auto& t : threads) t.join();
  for (const std::string& f : failures) FAIL_CHECK(f);
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r << ": " << errors[static_cast<size_t>(r)].ToString());
    REQUIRE(errors[static_cast<size_t>(r)].ok());
  }
}

TEST_CASE("TCP ring all-reduce sums exactly and leaves every rank identical", "[dist]") {
  for (int world : {1, 2, 3, 4}) {
    // Sizes below, at and above the world size, and one that is not a
    // multiple of it, large enough to fill the socket buffers.
    for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{1000}, int64_t{1 << 20} + 7}) {
      INFO("world " << world << ", n " << n);
      std::vector<std::vector<float>> results(static_cast<size_t>(world));
      std::vector<Status> status(static_cast<size_t>(world));
      RunRanks(world, [&](int r, Communicator& c) {
        Expect(c.rank() == r,
               "rank " + std::to_string(r) + " has rank " + std::to_string(c.rank()));
        Expect(c.world_size() == world, "world size " + std::to_string(c.world_size()));
        // Small integers: the float sums are exact in any order.
        std::vector<float> data(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          data[static_cast<size_t>(i)] = static_cast<float>((i % 97) * (r + 1));
        }
        status[static_cast<size_t>(r)] = c.AllReduceSum(data.data(), n);
        results[static_cast<size_t>(r)] = std::move(data);
      });
      const float factor = static_cast<float>(world * (world + 1) / 2);
      for (int r = 0; r < world; ++r) {
        REQUIRE(status[static_cast<size_t>(r)].ok());
        const auto& got = results[static_cast<size_t>(r)];
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (got[static_cast<size_t>(i)] != static_cast<float>(i % 97) * factor) ++wrong;
        }
        CHECK(wrong == 0);
      }
    }
  }
}

TEST_CASE("TCP all-reduce of inexact sums is bitwise identical on all ranks", "[dist]") {
  const int world = 3;
  const int64_t n = 100003;
  std::vector<std::vector<double>> results(world);
  RunRanks(world, [&](int r, Communicator& c) {
    std::vector<double> data(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) data[static_cast<size_t>(i)] = 1.0 / double(i + r + 3);
    Expect(c.AllReduceSum(data.data(), n).ok(), "all-reduce on rank " + std::to_string(r));
    results[static_cast<size_t>(r)] = std::move(data);
  });
  // Parenthesised: Catch would print 100k-element vectors.
  CHECK((results[0] == results[1]));
  CHECK((results[1] == results[2]));
  CHECK(results[0][0] == Approx(1.0 / 3 + 1.0 / 4 + 1.0 / 5));
}

TEST_CASE("TCP broadcast copies the root's bytes to every rank", "[dist]") {
  const int world = 4;
  const int64_t bytes = (9 << 20) + 5;  // Several pipeline chunks and a tail.
  for (int root : {0, 2}) {
    std::vector<std::vector<char>> results(world);
    RunRanks(world, [&](int r, Communicator& c) {
      std::vector<char> data(static_cast<size_t>(bytes), static_cast<char>(r));
      if (r == root) {
        for (int64_t i = 0; i < bytes; ++i) data[static_cast<size_t>(i)] = static_cast<char>(i * 7);
      }
      Expect(c.Broadcast(data.data(), bytes, root).ok(), "broadcast on rank " + std::to_string(r));
      results[static_cast<size_t>(r)] = std::move(data);
    });
    for (int r = 0; r < world; ++r)
      CHECK((results[static_cast<size_t>(r)] == results[static_cast<size_t>(root)]));
    CHECK(results[0][1] == 7);
  }
}

// Connects `world` ranks where `options` may break some; returns each rank's
// ConnectTcp status.
std::vector<Status> Connect(int world, const std::function<TcpOptions(int, int)>& options) {
  const int port = testing::FreePort();
  std::vector<Status> out(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back(
        [&, r] { out[static_cast<size_t>(r)] = ConnectTcp(options(r, port)).status(); });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST_CASE("The rendezvous refuses a rank whose configuration differs, on both sides", "[dist]") {
  auto status = Connect(3, [](int r, int port) {
    TcpOptions o = Options(r, 3, port);
    if (r == 2) o.config["batch"] = 8;
    return o;
  });
  for (int r : {0, 2}) {
    INFO("rank " << r << ": " << status[static_cast<size_t>(r)].ToString());
    CHECK(status[static_cast<size_t>(r)].code() == StatusCode::kInvalidArgument);
    CHECK_THAT(status[static_cast<size_t>(r)].message(),
               Catch::Contains("batch is 8 there but 4 on rank 0"));
    CHECK_FALSE(IsCommunicationFault(status[static_cast<size_t>(r)]));
  }
  // Rank 1 either heard the refusal too or had not joined yet and then could
  // not reach rank 0; it never connects.
  CHECK_FALSE(status[1].ok());
}

TEST_CASE("The rendezvous refuses two workers with the same rank", "[dist]") {
  auto status = Connect(3, [](int r, int port) { return Options(r == 2 ? 1 : r, 3, port); });
  CHECK(status[0].code() == StatusCode::kInvalidArgument);
  CHECK_THAT(status[0].message(), Catch::Contains("rank 1 joined twice"));
}

TEST_CASE("A rank that never joins times the rendezvous out as a communication fault", "[dist]") {
  const int port = testing::FreePort();
  TcpOptions o = Options(0, 3, port);
  o.rendezvous_timeout = milliseconds(300);
  auto s = ConnectTcp(o).status();
  CHECK(s.code() == StatusCode::kDeadlineExceeded);
  CHECK(IsCommunicationFault(s));
  CHECK_THAT(s.message(), Catch::Contains("rank 1, rank 2 did not join"));
  // And a worker whose rank 0 never comes up.
  TcpOptions w = Options(1, 2, port);
  w.rendezvous_timeout = milliseconds(300);
  s = ConnectTcp(w).status();
  CHECK(s.code() == StatusCode::kDeadlineExceeded);
  CHECK(IsCommunicationFault(s));
  CHECK_THAT(s.message(), Catch::Contains("cannot connect to 127.0.0.1:"));
}

TEST_CASE("A peer that leaves fails the collective at once, one that hangs after the timeout",
          "[dist]") {
  const int world = 3;
  std::vector<Status> status(world);
  SECTION("dies") {
    RunRanks(world, [&](int r, Communicator& c) {
      std::vector<float> data(1000, 1.0f);
      Expect(c.AllReduceSum(data.data(), 1000).ok(),
             "first all-reduce on rank " + std::to_string(r));
      // Rank 2 returns, closing its sockets, as a crashed process would.
      if (r != 2) status[static_cast<size_t>(r)] = c.AllReduceSum(data.data(), 1000);
    });
    for (int r : {0, 1}) {
      INFO(status[static_cast<size_t>(r)].ToString());
      CHECK(IsCommunicationFault(status[static_cast<size_t>(r)]));
    }
    // Rank 0 receives from rank 2; rank 1 sends to it.
    CHECK(status[0].code() == StatusCode::kUnavailable);
    CHECK_THAT(status[0].message(), Catch::Contains("rank 2 closed the connection"));
  }
  SECTION("hangs") {
    std::atomic<int> finished{0};
    RunRanks(
        world,
        [&](int r, Communicator& c) {
          std::vector<float> data(1000, 1.0f);
          if (r != 2) {
            status[static_cast<size_t>(r)] = c.AllReduceSum(data.data(), 1000);
            ++finished;
          } else {
            // Alive but silent (a stuck GPU, a stopped process) until the
            // others have given up.
            while (finished.load() < 2) std::this_thread::sleep_for(milliseconds(10));
          }
        },
        [](int r, int port) {
          TcpOptions o = Options(r, 3, port);
          o.timeout = milliseconds(300);
          return o;
        });
    for (int r : {0, 1}) {
      INFO(status[static_cast<size_t>(r)].ToString());
      CHECK(IsCommunicationFault(status[static_cast<size_t>(r)]));
    }
    CHECK(status[0].code() == StatusCode::kDeadlineExceeded);
    CHECK_THAT(status[0].message(), Catch::Contains("no data from rank 2 for 300ms"));
  }
}

}  // namespace
}  // namespace kiln::dist
