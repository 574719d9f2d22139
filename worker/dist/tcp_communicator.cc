#include "worker/dist/tcp_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <vector>

#include "base/duration.h"
#include "worker/dist/socket.h"

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kProtocol = 1;

std::string RankName(int r) { return "rank " + std::to_string(r); }

Millis Left(Clock::time_point deadline) {
  return std::max(Millis(0), std::chrono::duration_cast<Millis>(deadline - Clock::now()));
}

// The first key (sorted) whose value differs between two config objects.
std::string FirstDifference(const nlohmann::json& a, const nlohmann::json& b) {
  std::vector<std::string> keys;
  for (auto& [k, v] : a.items()) keys.push_back(k);
  for (auto& [k, v] : b.items()) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  for (const auto& k : keys) {
    const auto av = a.contains(k) ? a[k].dump() : "(unset)";
    const auto bv = b.contains(k) ? b[k].dump() : "(unset)";
    if (av != bv) return k + " is " + bv + " there but " + av + " on rank 0";
  }
  return "";
}

struct Peer {
  std::string host;
  int port = 0;
};

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(int rank, int world, Millis timeout, Socket next, Socket prev)
      : rank_(rank),
        world_(world),
        timeout_(timeout),
        next_(std::move(next)),
        prev_(std::move(prev)),
        next_name_(RankName((rank + 1) % world)),
        prev_name_(RankName((rank + world - 1) % world)) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  Status AllReduceSum(float* data, int64_t n) override { return RingAllReduce(data, n); }
  Status AllReduceSum(double* data, int64_t n) override { return RingAllReduce(data, n); }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= world_) return Status::InvalidArgument("broadcast root out of range");
    constexpr int64_t kChunk = 4 << 20;
    auto* p = static_cast<char*>(data);
    const bool forward = (rank_ + 1) % world_ != root;
    for (int64_t off = 0; off < bytes; off += kChunk) {
      const auto n = static_cast<size_t>(std::min(kChunk, bytes - off));
      if (rank_ != root) KILN_RETURN_IF_ERROR(RecvAll(prev_, p + off, n, timeout_, prev_name_));
      if (forward) KILN_RETURN_IF_ERROR(SendAll(next_, p + off, n, timeout_, next_name_));
    }
    return Status::Ok();
  }

 private:
  // Segment i of n elements: [n*i/W, n*(i+1)/W).
  int64_t Begin(int64_t n, int i) const { return n * i / world_; }

  template <class T>
  Status RingAllReduce(T* data, int64_t n) {
    if (n <= 0) return Status::Ok();
    const int64_t max_seg = (n + world_ - 1) / world_;
    scratch_.resize(static_cast<size_t>(max_seg) * sizeof(T));
    T* incoming = reinterpret_cast<T*>(scratch_.data());
    auto seg = [&](int i) {
      i = ((i % world_) + world_) % world_;
      return std::pair<int64_t, int64_t>(Begin(n, i), Begin(n, i + 1) - Begin(n, i));
    };
    // Reduce-scatter: after W-1 steps this rank holds the full sum of
    // segment rank+1.
    for (int k = 0; k < world_ - 1; ++k) {
      auto [so, sn] = seg(rank_ - k);
      auto [ro, rn] = seg(rank_ - k - 1);
      KILN_RETURN_IF_ERROR(SendRecv(next_, data + so, static_cast<size_t>(sn) * sizeof(T),
                                    next_name_, prev_, incoming,
                                    static_cast<size_t>(rn) * sizeof(T), prev_name_, timeout_));
      T* dst = data + ro;
      for (int64_t i = 0; i < rn; ++i) dst[i] += incoming[i];
    }
    // All-gather: pass the finished segments around the ring.
    for (int k = 0; k < world_ - 1; ++k) {
      auto [so, sn] = seg(rank_ + 1 - k);
      auto [ro, rn] = seg(rank_ - k);
      KILN_RETURN_IF_ERROR(SendRecv(next_, data + so, static_cast<size_t>(sn) * sizeof(T),
                                    next_name_, prev_, data + ro,
                                    static_cast<size_t>(rn) * sizeof(T), prev_name_, timeout_));
    }
    return Status::Ok();
  }

  const int rank_, world_;
  const Millis timeout_;
  Socket next_, prev_;
  const std::string next_name_, prev_name_;
  std::vector<char> scratch_;
};

// Rank 0's side of the rendezvous: collect every rank's hello, check it, and
// send everyone the table of ring addresses.
StatusOr<std::vector<Peer>> Coordinate(const TcpOptions& o, int ring_port,
                                       Clock::time_point deadline) {
  const int world = o.env.world_size;
  KILN_ASSIGN_OR_RETURN(Socket listener, Listen(o.env.master_port));
  std::vector<Peer> peers(static_cast<size_t>(world));
  peers[0] = {o.env.master_addr, ring_port};
  std::vector<std::optional<Socket>> conns(static_cast<size_t>(world));
  for (int joined = 1; joined < world;) {
    auto conn = Accept(listener, Left(deadline));
    if (!conn.ok()) {
      std::string missing;
      for (int r = 1; r < world; ++r) {
        if (!conns[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ", ") + RankName(r);
      }
      return CommunicationError(StatusCode::kDeadlineExceeded,
                                "rendezvous: " + missing + " did not join within " +
                                    FormatDuration(o.rendezvous_timeout));
    }
    // A connection that never says hello (a port scanner, a health probe)
    // must not stall the rendezvous for long.
    auto hello_text = RecvMessage(*conn, std::min(Left(deadline), Millis(10000)), "a peer");
    if (!hello_text.ok()) continue;
    auto hello = nlohmann::json::parse(*hello_text, nullptr, false);
    // Telling a refused peer why is best effort: it may be gone already, and
    // rank 0's own error (returned below, or the dropped connection) does not
    // depend on the send.
    auto reject = [&](const std::string& why) {
      (void)SendMessage(*conn, nlohmann::json{{"error", why}}.dump(), Millis(2000), "a peer");
    };
    if (!hello.is_object() || hello.value("kiln", 0) != kProtocol || !hello.contains("rank")) {
      reject("not a kiln rendezvous hello (protocol " + std::to_string(kProtocol) + ")");
      continue;
    }
    const int r = hello.value("rank", -1);
    const std::string who = RankName(r);
    std::string why;
    if (hello.value("worldSize", 0) != world) {
      why = who + " has WORLD_SIZE=" + std::to_string(hello.value("worldSize", 0)) +
            " but rank 0 has " + std::to_string(world);
    } else if (r < 1 || r >= world) {
      why = "rank " + std::to_string(r) + " is outside [1, " + std::to_string(world) + ")";
    } else if (conns[static_cast<size_t>(r)]) {
      why = who + " joined twice (two workers with the same RANK)";
    } else if (hello.value("config", nlohmann::json()) != o.config) {
      why = who + "'s configuration differs from rank 0's: " +
            FirstDifference(o.config, hello.value("config", nlohmann::json()));
    }
    if (!why.empty()) {
      // Fail fast: the job cannot run. Everyone connected so far hears why.
      reject(why);
      // Best effort as reject: each rank also fails on its own when rank 0 goes.
      for (auto& c : conns) {
        if (c) (void)SendMessage(*c, nlohmann::json{{"error", why}}.dump(), Millis(2000), "a peer");
      }
      return Status::InvalidArgument("rendezvous: " + why);
    }
    auto host = conn->PeerHost();
    if (!host.ok()) return host.status();
    peers[static_cast<size_t>(r)] = {*host, hello.value("port", 0)};
    conns[static_cast<size_t>(r)] = std::move(*conn);
    ++joined;
  }
  nlohmann::json reply;
  reply["peers"] = nlohmann::json::array();
  for (const auto& p : peers) reply["peers"].push_back({{"host", p.host}, {"port", p.port}});
  for (int r = 1; r < world; ++r) {
    KILN_RETURN_IF_ERROR(
        SendMessage(*conns[static_cast<size_t>(r)], reply.dump(), Left(deadline), RankName(r)));
  }
  return peers;
}

// A non-zero rank's side: say hello to rank 0 and get the table back.
StatusOr<std::vector<Peer>> Join(const TcpOptions& o, int ring_port, Clock::time_point deadline) {
  KILN_ASSIGN_OR_RETURN(Socket master,
                        Connect(o.env.master_addr, o.env.master_port, Left(deadline)));
  const nlohmann::json hello = {{"kiln", kProtocol},
                                {"rank", o.env.rank},
                                {"worldSize", o.env.world_size},
                                {"port", ring_port},
                                {"config", o.config}};
  KILN_RETURN_IF_ERROR(SendMessage(master, hello.dump(), Left(deadline), "rank 0"));
  KILN_ASSIGN_OR_RETURN(std::string text, RecvMessage(master, Left(deadline), "rank 0"));
  auto reply = nlohmann::json::parse(text, nullptr, false);
  if (reply.is_object() && reply.contains("error")) {
    return Status::InvalidArgument("rendezvous refused by rank 0: " +
                                   reply["error"].get<std::string>());
  }
  if (!reply.is_object() || !reply.contains("peers") || !reply["peers"].is_array() ||
      reply["peers"].size() != static_cast<size_t>(o.env.world_size)) {
    return Status::Internal("rendezvous: malformed reply from rank 0");
  }
  std::vector<Peer> peers;
  for (const auto& p : reply["peers"]) {
    peers.push_back({p.value("host", ""), p.value("port", 0)});
  }
  return peers;
}

}  // namespace

StatusOr<std::unique_ptr<Communicator>> ConnectTcp(const TcpOptions& o) {
  const int world = o.env.world_size, rank = o.env.rank;
  if (world < 1 || rank < 0 || rank >= world) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " outside world size " +
                                   std::to_string(world));
  }
  if (world == 1) return NewSingleProcessCommunicator();
  if (o.env.master_addr.empty() || o.env.master_port <= 0) {
    return Status::InvalidArgument("MASTER_ADDR and MASTER_PORT are required for WORLD_SIZE > 1");
  }
  const auto deadline = Clock::now() + o.rendezvous_timeout;
  KILN_ASSIGN_OR_RETURN(Socket ring_listener, Listen(0));
  KILN_ASSIGN_OR_RETURN(int ring_port, ring_listener.LocalPort());
  std::vector<Peer> peers;
  if (rank == 0) {
    KILN_ASSIGN_OR_RETURN(peers, Coordinate(o, ring_port, deadline));
  } else {
    KILN_ASSIGN_OR_RETURN(peers, Join(o, ring_port, deadline));
  }
  // Connect forward first (the kernel completes it from the backlog), then
  // accept from behind; each side names itself so a stray connection is refused.
  const int next = (rank + 1) % world, prev = (rank + world - 1) % world;
  const Peer& np = peers[static_cast<size_t>(next)];
  KILN_ASSIGN_OR_RETURN(Socket out, Connect(np.host, np.port, Left(deadline)));
  const int32_t me = rank;
  KILN_RETURN_IF_ERROR(SendAll(out, &me, sizeof me, Left(deadline), RankName(next)));
  while (true) {
    KILN_ASSIGN_OR_RETURN(Socket in, Accept(ring_listener, Left(deadline)));
    int32_t them = -1;
    if (!RecvAll(in, &them, sizeof them, std::min(Left(deadline), Millis(10000)), RankName(prev))
             .ok() ||
        them != prev) {
      continue;
    }
    return std::unique_ptr<Communicator>(
        new TcpCommunicator(rank, world, o.timeout, std::move(out), std::move(in)));
  }
}

}  // namespace kiln::dist
