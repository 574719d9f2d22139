// ConnectNccl (worker/dist/nccl_communicator.h) on real GPUs. One rank over
// the single-process bootstrap: all-reduce (float, double) and broadcast of
// device memory, and the refusals (host pointers, a bad root). With two or
// more GPUs, two ranks as threads over a TCP bootstrap on loopback: the sums
// are exact (small integers) and equal on both ranks, a broadcast from rank
// 1 arrives, and a peer that stops calling collectives makes the other fail
// with a CommunicationFault within its timeout instead of hanging. Catch2
// test cases, skipped without a GPU (tests/support/gpu.h); NCCL refuses two
// ranks on one GPU, so with one GPU the two-rank ones skip and say so. Each
// prints its checks.
#include <cuda_runtime.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tests/support/gpu.h"
#include "worker/dist/nccl_communicator.h"
#include "worker/dist/tcp_communicator.h"

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

bool Ok(const std::string& what, const Status& s) {
  if (s.ok()) return true;
  std::printf("  %s: FAILED: %s\n", what.c_str(), s.ToString().c_str());
  return false;
}

bool Expect(const std::string& what, bool ok) {
  std::printf("  %-52s %s\n", what.c_str(), ok ? "ok" : "FAILED");
  return ok;
}

bool CudaOk(const char* what, cudaError_t e) {
  if (e == cudaSuccess) return true;
  std::printf("  %s: FAILED: %s (%s)\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
  return false;
}

// `count` T on the current device, filled from / read back to the host.
template <class T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : count_(host.size()) {
    ok_ = CudaOk("cudaMalloc", cudaMalloc(&data_, count_ * sizeof(T))) &&
          CudaOk("cudaMemcpy",
                 cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  ~DeviceVector() {
    if (data_ != nullptr) cudaFree(data_);
  }
  bool ok() const { return ok_; }
  T* get() { return static_cast<T*>(data_); }
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    if (!CudaOk("cudaMemcpy",
                cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost))) {
      host.clear();
    }
    return host;
  }

 private:
  void* data_ = nullptr;
  size_t count_;
  bool ok_ = false;
};

// rank r's contribution: small integers, so every sum is exact.
template <class T>
std::vector<T> Contribution(size_t n, int rank) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>((i % 97) * static_cast<size_t>(rank + 1));
  return v;
}

// A loopback port that was free a moment ago; 0 if none.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

bool TestSingleRank() {
  std::printf("one rank (single-process bootstrap):\n");
  auto bootstrap = NewSingleProcessCommunicator();
  auto comm = ConnectNccl(*bootstrap, 0, milliseconds(60000));
  if (!Ok("ConnectNccl", comm.status())) return false;
  Communicator& c = **comm;
  bool ok = Expect("rank 0 of 1", c.rank() == 0 && c.world_size() == 1);

  const size_t n = (size_t{1} << 20) + 3;
  const auto floats = Contribution<float>(n, 0);
  DeviceVector<float> d_floats(floats);
  if (!d_floats.ok()) return false;
  ok = Ok("AllReduceSum(float)", c.AllReduceSum(d_floats.get(), static_cast<int64_t>(n))) && ok;
  ok = Expect("float sum of one rank is the input", d_floats.Download() == floats) && ok;

  const auto doubles = Contribution<double>(1000, 0);
  DeviceVector<double> d_doubles(doubles);
  if (!d_doubles.ok()) return false;
  ok = Ok("AllReduceSum(double)", c.AllReduceSum(d_doubles.get(), 1000)) && ok;
  ok = Expect("double sum of one rank is the input", d_doubles.Download() == doubles) && ok;

  std::vector<char> bytes(4097);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  DeviceVector<char> d_bytes(bytes);
  if (!d_bytes.ok()) return false;
  ok = Ok("Broadcast", c.Broadcast(d_bytes.get(), static_cast<int64_t>(bytes.size()), 0)) && ok;
  ok = Expect("broadcast from rank 0 keeps the bytes", d_bytes.Download() == bytes) && ok;
  ok = Ok("AllReduceSum of 0 values", c.AllReduceSum(d_floats.get(), 0)) && ok;

  std::vector<float> host(16, 1.0f);
  ok = Expect("a host pointer is InvalidArgument",
              c.AllReduceSum(host.data(), 16).code() == StatusCode::kInvalidArgument) &&
       ok;
  return Expect("root 1 of 1 is InvalidArgument",
                c.Broadcast(d_bytes.get(), 16, 1).code() == StatusCode::kInvalidArgument) &&
         ok;
}

TcpOptions Bootstrap(int rank, int port) {
  TcpOptions o;
  o.env = {.rank = rank, .world_size = 2, .master_addr = "127.0.0.1", .master_port = port};
  o.timeout = milliseconds(60000);
  o.rendezvous_timeout = milliseconds(60000);
  return o;
}

// Runs `body` on ranks 0 and 1 (threads, GPUs 0 and 1), each with its NCCL
// communicator; false when one could not connect.
bool RunTwoRanks(milliseconds timeout, const std::function<void(int, Communicator&)>& body) {
  const int port = FreePort();
  if (port == 0) {
    std::printf("  FAILED: no free loopback port\n");
    return false;
  }
  Status errors[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto tcp = ConnectTcp(Bootstrap(r, port));
      if (!tcp.ok()) {
        errors[r] = tcp.status().WithContext("ConnectTcp");
        return;
      }
      auto nccl = ConnectNccl(**tcp, r, timeout);
      if (!nccl.ok()) {
        errors[r] = nccl.status().WithContext("ConnectNccl");
        return;
      }
      body(r, **nccl);
    });
  }
  for (auto& t : threads) t.join();
  bool ok = true;
  for (int r = 0; r < 2; ++r) ok = Ok("rank " + std::to_string(r), errors[r]) && ok;
  return ok;
}

bool TestTwoRanks() {
  std::printf("two ranks (GPUs 0 and 1, TCP bootstrap on loopback):\n");
  const size_t n = (size_t{1} << 20) + 7;
  Status status[2];
  bool float_sums[2] = {}, double_sums[2] = {}, broadcasts[2] = {};
  const bool connected = RunTwoRanks(milliseconds(60000), [&](int r, Communicator& c) {
    Status& s = status[r];
    DeviceVector<float> floats(Contribution<float>(n, r));
    DeviceVector<double> doubles(Contribution<double>(n, r));
    std::vector<char> bytes(3001, static_cast<char>(r == 1 ? 0x5a : 0));
    DeviceVector<char> d_bytes(bytes);
    if (!floats.ok() || !doubles.ok() || !d_bytes.ok()) {
      s = Status::Internal("device buffers");
      return;
    }
    s = c.AllReduceSum(floats.get(), static_cast<int64_t>(n));
    if (s.ok()) s = c.AllReduceSum(doubles.get(), static_cast<int64_t>(n));
    if (s.ok()) s = c.Broadcast(d_bytes.get(), static_cast<int64_t>(bytes.size()), 1);
    if (!s.ok()) return;
    // Rank 0 adds 1x, rank 1 2x: every rank must hold 3x.
    float_sums[r] = floats.Download() == Contribution<float>(n, 2);
    double_sums[r] = doubles.Download() == Contribution<double>(n, 2);
    broadcasts[r] = d_bytes.Download() == std::vector<char>(bytes.size(), 0x5a);
  });
  if (!connected) return false;
  bool ok = true;
  for (int r = 0; r < 2; ++r) {
    const std::string rank = "rank " + std::to_string(r);
    ok = Ok(rank + " collectives", status[r]) && ok;
    ok = Expect(rank + ": float all-reduce exact", float_sums[r]) && ok;
    ok = Expect(rank + ": double all-reduce exact", double_sums[r]) && ok;
    ok = Expect(rank + ": broadcast from rank 1 arrived", broadcasts[r]) && ok;
  }
  return ok;
}

// Rank 1 stops calling collectives; rank 0's all-reduce must fail with
// DeadlineExceeded and a CommunicationFault about `timeout` later, and every
// later call at once.
bool TestDeadPeerFailsFast() {
  const milliseconds timeout(10000);
  std::printf("a silent peer fails the other rank within its %lld ms timeout:\n",
              static_cast<long long>(timeout.count()));
  Status first, second;
  double seconds = 0;
  std::promise<void> rank0_done;
  std::shared_future<void> done = rank0_done.get_future().share();
  const bool connected = RunTwoRanks(timeout, [&](int r, Communicator& c) {
    if (r == 1) {
      // Silent until rank 0 has given up (bounded, should rank 0 be stuck),
      // then shuts down.
      done.wait_for(timeout * 3);
      return;
    }
    DeviceVector<float> data(std::vector<float>(1024, 1.0f));
    const auto start = Clock::now();
    first = data.ok() ? c.AllReduceSum(data.get(), 1024) : Status::Internal("device buffer");
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
    second = c.AllReduceSum(data.get(), 1024);
    rank0_done.set_value();
  });
  if (!connected) return false;
  std::printf("  first all-reduce after %.1f s: %s\n", seconds, first.ToString().c_str());
  std::printf("  second all-reduce: %s\n", second.ToString().c_str());
  const double limit = static_cast<double>(timeout.count()) / 1000.0;
  bool ok = Expect("DeadlineExceeded with CommunicationFault",
                   first.code() == StatusCode::kDeadlineExceeded && IsCommunicationFault(first));
  ok = Expect("after the timeout, within 10 s of it",
              seconds >= 0.9 * limit && seconds <= limit + 10) &&
       ok;
  return Expect("then Unavailable with CommunicationFault at once",
                second.code() == StatusCode::kUnavailable && IsCommunicationFault(second)) &&
         ok;
}

}  // namespace

TEST_CASE("single_rank", "[gpu]") {
  KILN_REQUIRE_GPU();
  CHECK(TestSingleRank());
}

TEST_CASE("two_ranks", "[gpu]") {
  KILN_REQUIRE_GPUS(2,
                    "NCCL refuses two ranks on one GPU; run on a machine with >= 2 GPUs to test "
                    "the all-reduce and broadcast between ranks");
  CHECK(TestTwoRanks());
}

TEST_CASE("dead_peer_fails_fast", "[gpu]") {
  KILN_REQUIRE_GPUS(2,
                    "NCCL refuses two ranks on one GPU; run on a machine with >= 2 GPUs to test "
                    "the dead-peer timeout");
  CHECK(TestDeadPeerFailsFast());
}

}  // namespace kiln::dist
