#include "worker/dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdint>
#include <string>
#include <thread>

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;

// Spins briefly (collectives of a training step take microseconds to
// milliseconds), then sleeps between polls.
void Pause(int polls) {
  if (polls < 1000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// A peer or the network (system, remote errors) is a CommunicationFault; a
// CUDA error means the device is in trouble (Unavailable); the rest are
// misuse, i.e. bugs (Internal).
Status NcclError(const std::string& call, ncclResult_t r) {
  std::string msg = call + ": " + ncclGetErrorString(r);
  const char* detail = ncclGetLastError(nullptr);
  if (detail != nullptr && *detail != '\0') msg += std::string(" (") + detail + ")";
  switch (r) {
    case ncclSystemError:
    case ncclRemoteError:
      return CommunicationError(StatusCode::kUnavailable, std::move(msg));
    case ncclUnhandledCudaError:
      return Status::Unavailable(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

Status CudaError(const std::string& call, cudaError_t e) {
  return Status::Unavailable(call + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                             ")");
}

// What rank 0 broadcasts: the unique id, or that it has none, so that the
// other ranks fail at once instead of waiting for a communicator that will
// never form.
struct IdMessage {
  int32_t ok = 0;
  ncclUniqueId id{};
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int world, int device, std::chrono::milliseconds timeout)
      : rank_(rank), world_(world), device_(device), timeout_(timeout) {}
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      // Finalize flushes and lets the peers quiesce; bounded like a
      // collective, so a dead peer cannot hang the shutdown either.
      const auto deadline = Clock::now() + timeout_;
      ncclResult_t state = ncclCommFinalize(comm_);
      for (int polls = 0; state == ncclInProgress && Clock::now() < deadline; ++polls) {
        Pause(polls);
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) state = ncclInternalError;
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Joins the communicator `id` names (every rank calls it with the same id).
  Status Init(const ncclUniqueId& id) {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) return CudaError("cudaSetDevice(" + std::to_string(device_) + ")", e);
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) return CudaError("cudaStreamCreateWithFlags", e);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // Every call returns at once; Await polls it under the deadline.
    const auto deadline = Clock::now() + timeout_;
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, world_, id, rank_, &config);
    return Await(r, "ncclCommInitRankConfig (joining " + std::to_string(world_) + " ranks)",
                 deadline);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  Status AllReduceSum(float* data, int64_t n) override { return AllReduce(data, n, ncclFloat32); }
  Status AllReduceSum(double* data, int64_t n) override { return AllReduce(data, n, ncclFloat64); }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= world_) return Status::InvalidArgument("broadcast root out of range");
    if (bytes < 0) return Status::InvalidArgument("broadcast of a negative size");
    KILN_RETURN_IF_ERROR(Usable());
    if (bytes == 0) return Status::Ok();
    KILN_RETURN_IF_ERROR(CheckDeviceMemory(data, "Broadcast"));
    const auto deadline = Clock::now() + timeout_;
    KILN_RETURN_IF_ERROR(Await(
        ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_),
        "ncclBroadcast", deadline));
    return AwaitStream("ncclBroadcast", deadline);
  }

 private:
  Status AllReduce(void* data, int64_t n, ncclDataType_t type) {
    if (n < 0) return Status::InvalidArgument("all-reduce of a negative count");
    KILN_RETURN_IF_ERROR(Usable());
    if (n == 0) return Status::Ok();
    KILN_RETURN_IF_ERROR(CheckDeviceMemory(data, "AllReduceSum"));
    const auto deadline = Clock::now() + timeout_;
    KILN_RETURN_IF_ERROR(
        Await(ncclAllReduce(data, data, static_cast<size_t>(n), type, ncclSum, comm_, stream_),
              "ncclAllReduce", deadline));
    return AwaitStream("ncclAllReduce", deadline);
  }

  // The error every call returns once the communicator was aborted.
  Status Usable() const {
    if (comm_ != nullptr) return Status::Ok();
    return CommunicationError(
        StatusCode::kUnavailable,
        "the NCCL communicator was aborted after an earlier failure: " + fault_.ToString());
  }

  // InvalidArgument unless `data` is device (or managed) memory of this
  // rank's GPU; makes that GPU current.
  Status CheckDeviceMemory(const void* data, const char* op) const {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) return CudaError("cudaSetDevice", e);
    cudaPointerAttributes attributes{};
    e = cudaPointerGetAttributes(&attributes, data);
    if (e != cudaSuccess) return CudaError("cudaPointerGetAttributes", e);
    if (attributes.type == cudaMemoryTypeManaged) return Status::Ok();
    if (attributes.type != cudaMemoryTypeDevice) {
      return Status::InvalidArgument(std::string(op) +
                                     ": NCCL collectives take device memory, not a host pointer");
    }
    if (attributes.device != device_) {
      return Status::InvalidArgument(std::string(op) + ": the buffer is on GPU " +
                                     std::to_string(attributes.device) + ", this rank uses GPU " +
                                     std::to_string(device_));
    }
    return Status::Ok();
  }

  // Aborts the NCCL communicator (its kernels stop and its peers see the
  // failure) and remembers why.
  Status Abort(Status why) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    fault_ = why;
    return why;
  }

  Status TimedOut(const std::string& what) {
    return Abort(CommunicationError(
        StatusCode::kDeadlineExceeded,
        what + " did not finish within " + std::to_string(timeout_.count()) + " ms on rank " +
            std::to_string(rank_) + ": a peer died, hangs, or is not calling the same collective"));
  }

  // Waits until the non-blocking NCCL call that returned `r` has been
  // issued (or has failed).
  Status Await(ncclResult_t r, const std::string& call, Clock::time_point deadline) {
    for (int polls = 0; r == ncclInProgress; ++polls) {
      if (Clock::now() >= deadline) return TimedOut(call);
      Pause(polls);
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &r);
      if (q != ncclSuccess) return Abort(NcclError("ncclCommGetAsyncError", q));
    }
    if (r != ncclSuccess) return Abort(NcclError(call, r));
    return Status::Ok();
  }

  // Waits until the collective issued on the stream has completed.
  Status AwaitStream(const std::string& call, Clock::time_point deadline) {
    for (int polls = 0;; ++polls) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) return Abort(CudaError(call + " on the stream", e));
      ncclResult_t async = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &async);
      if (q != ncclSuccess) return Abort(NcclError("ncclCommGetAsyncError", q));
      if (async != ncclSuccess && async != ncclInProgress) return Abort(NcclError(call, async));
      if (Clock::now() >= deadline) return TimedOut(call);
      Pause(polls);
    }
  }

  const int rank_, world_, device_;
  const std::chrono::milliseconds timeout_;
  ncclComm_t comm_ = nullptr;  // Null once aborted (or before Init).
  cudaStream_t stream_ = nullptr;
  Status fault_;  // Why it was aborted.
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> ConnectNccl(Communicator& bootstrap, int device,
                                                    std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return Status::InvalidArgument("the NCCL timeout must be positive");
  const int rank = bootstrap.rank(), world = bootstrap.world_size();
  IdMessage message;
  Status id_status;
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&message.id);
    message.ok = r == ncclSuccess ? 1 : 0;
    if (r != ncclSuccess) id_status = NcclError("ncclGetUniqueId", r);
  }
  KILN_RETURN_IF_ERROR(bootstrap.Broadcast(&message, sizeof(message), 0)
                           .WithContext("broadcasting the NCCL unique id"));
  if (!id_status.ok()) return id_status;
  if (message.ok == 0) {
    return CommunicationError(StatusCode::kUnavailable,
                              "rank 0 could not create the NCCL unique id (see its log)");
  }
  auto comm = std::make_unique<NcclCommunicator>(rank, world, device, timeout);
  KILN_RETURN_IF_ERROR(comm->Init(message.id));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace kiln::dist
