#include "worker/dist/communicator.h"

namespace kiln::dist {
namespace {

class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Status AllReduceSum(float*, int64_t) override { return Status::Ok(); }
  Status AllReduceSum(double*, int64_t) override { return Status::Ok(); }
  Status Broadcast(void*, int64_t, int root) override {
    return root == 0 ? Status::Ok() : Status::InvalidArgument("broadcast root out of range");
  }
};

}  // namespace

Status CommunicationError(StatusCode code, std::string message) {
  return Status(code, std::move(message)).WithDetail(std::make_shared<CommunicationFault>());
}

std::unique_ptr<Communicator> NewSingleProcessCommunicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

}  // namespace kiln::dist
