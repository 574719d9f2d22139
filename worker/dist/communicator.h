// Communicator: the collectives data-parallel training needs, over some
// transport (TCP between CPU workers, NCCL between GPUs). Every rank calls the
// same collectives in the same order with the same sizes. Collectives are
// blocking; a peer that dies or stops answering makes them fail with a
// CommunicationFault instead of hanging (exit code CommunicationTimeout).
//
// Buffers live where the transport reads them: host memory for the TCP
// communicator, device memory of the rank's GPU for the NCCL one
// (worker/dist/nccl_communicator.h); the single-process one never reads them.
#ifndef KILN_WORKER_DIST_COMMUNICATOR_H_
#define KILN_WORKER_DIST_COMMUNICATOR_H_

#include <cstdint>
#include <memory>

#include "base/status.h"

namespace kiln::dist {

// Marks a status caused by a peer or the network: a peer closed its
// connection, or no data moved within the communication timeout.
class CommunicationFault final : public StatusDetail {};
inline bool IsCommunicationFault(const Status& s) {
  return s.detail<CommunicationFault>() != nullptr;
}
Status CommunicationError(StatusCode code, std::string message);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Replaces data[0..n) on every rank by the element-wise sum over the ranks.
  // Every rank ends with bitwise identical values.
  virtual Status AllReduceSum(float* data, int64_t n) = 0;
  virtual Status AllReduceSum(double* data, int64_t n) = 0;

  // Copies `bytes` bytes at `data` from rank `root` to every other rank.
  virtual Status Broadcast(void* data, int64_t bytes, int root) = 0;
};

// World size 1: every collective is a no-op.
std::unique_ptr<Communicator> NewSingleProcessCommunicator();

}  // namespace kiln::dist

#endif  // KILN_WORKER_DIST_COMMUNICATOR_H_
