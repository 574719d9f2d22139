// The NCCL Communicator of GPU data-parallel training: one rank per GPU.
//
// Its collectives take DEVICE memory on the rank's GPU: AllReduceSum's data
// and Broadcast's buffer must be device (or managed) pointers, already
// written (synchronise the stream that produced them first). Each collective
// runs on the communicator's own stream and returns once the result is in
// place, like every Communicator. NCCL reduces each element once and copies
// the result to every rank, so all ranks end bitwise identical.
//
// Failures: the communicator is non-blocking, and the rank polls it, so a
// peer that dies or hangs cannot block it forever. When a collective (or
// the setup) has not finished within `timeout`, or NCCL reports an error
// from a peer or the network, the rank aborts the NCCL communicator
// (ncclCommAbort) and fails with DeadlineExceeded or Unavailable carrying
// CommunicationFault; every later call fails the same way. The timeout must
// exceed the longest collective plus the longest pause between two (rank 0
// writing a checkpoint, a validation pass), as for the TCP communicator.
// Not thread-safe: one thread per rank.
#ifndef KILN_WORKER_DIST_NCCL_COMMUNICATOR_H_
#define KILN_WORKER_DIST_NCCL_COMMUNICATOR_H_

#include <chrono>
#include <memory>

#include "base/statusor.h"
#include "worker/dist/communicator.h"

namespace kiln::dist {

// Builds the NCCL communicator of the ranks `bootstrap` connects (the TCP
// communicator between pods, or the single-process one), on CUDA device
// `device`: rank 0 makes the NCCL unique id and broadcasts it through
// `bootstrap`, then every rank joins. Every rank of `bootstrap` must call
// it, each with a different GPU (NCCL refuses two ranks on one device).
// Unavailable when the device or NCCL cannot start; CommunicationFault
// errors (see above) when the ranks do not all join within `timeout`.
StatusOr<std::unique_ptr<Communicator>> ConnectNccl(
    Communicator& bootstrap, int device,
    std::chrono::milliseconds timeout = std::chrono::minutes(10));

}  // namespace kiln::dist

#endif  // KILN_WORKER_DIST_NCCL_COMMUNICATOR_H_
