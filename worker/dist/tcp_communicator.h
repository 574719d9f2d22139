// The TCP Communicator of CPU data-parallel training.
//
// Rendezvous: rank 0 listens on MASTER_PORT; every other rank connects to
// MASTER_ADDR:MASTER_PORT (retrying until the rendezvous timeout, as rank 0's
// pod may start later) and says hello with its rank, the world size, the port
// of its own ring listener and the job configuration it was started with.
// Rank 0 checks that every rank appears once and that all configurations
// agree, then sends everyone the address of every rank (as rank 0 saw it).
// Ring: each rank connects to rank+1 and accepts rank-1.
//
// AllReduceSum is the bandwidth-optimal ring algorithm (reduce-scatter, then
// all-gather): each rank sends and receives 2(W-1)/W of the buffer, and every
// segment is summed on one rank and copied to the others, so all ranks end
// bitwise identical. Broadcast pipelines chunks along the ring from the root.
//
// Failures: a peer that closes its connection (it died) fails the collective
// at once with Unavailable; one that moves no data for `timeout` (hung,
// partitioned) fails it with DeadlineExceeded; both carry CommunicationFault.
// The timeout must exceed the longest pause between two collectives (rank 0
// writing a checkpoint, a validation pass).
#ifndef KILN_WORKER_DIST_TCP_COMMUNICATOR_H_
#define KILN_WORKER_DIST_TCP_COMMUNICATOR_H_

#include <chrono>
#include <memory>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/dist/dist_env.h"

namespace kiln::dist {

struct TcpOptions {
  DistEnv env;
  // A collective fails when no byte moves for this long.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  // Every rank must have joined within this long.
  std::chrono::milliseconds rendezvous_timeout = std::chrono::minutes(10);
  // What every rank must agree on (model shape, batch, seed...): a JSON
  // object. A rank whose configuration differs from rank 0's is refused with
  // InvalidArgument naming the first differing key, on both sides.
  nlohmann::json config = nlohmann::json::object();
};

// Runs the rendezvous and builds the ring. InvalidArgument for a bad
// environment or a configuration mismatch (or a rank given twice);
// CommunicationFault (DeadlineExceeded) when the ranks do not all join in time.
StatusOr<std::unique_ptr<Communicator>> ConnectTcp(const TcpOptions& options);

}  // namespace kiln::dist

#endif  // KILN_WORKER_DIST_TCP_COMMUNICATOR_H_
