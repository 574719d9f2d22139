// The GPU TrainModel: GptCuda (worker/model/gpt_cuda.h) on one CUDA device,
// gradients summed over the ranks by an NCCL communicator
// (worker/dist/nccl_communicator.h). Built only with CUDA (KILN_HAVE_CUDA).
#ifndef KILN_WORKER_TRAIN_CUDA_TRAIN_MODEL_H_
#define KILN_WORKER_TRAIN_CUDA_TRAIN_MODEL_H_

#include <cstdint>
#include <memory>

#include "base/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/train/train_model.h"

namespace kiln::train {

// The model on CUDA device `device`, initialised as the CPU model with the
// same seed. `nccl` (not owned; null in a single process) sums the
// gradients in device memory; it must be built on the same device and
// outlive the model. Unavailable, naming the CUDA error, when the device
// cannot hold the model.
StatusOr<std::unique_ptr<TrainModel>> NewCudaTrainModel(const model::GptConfig& config,
                                                        uint64_t seed, int device,
                                                        dist::Communicator* nccl);

// The dense bf16 tensor-core peak FLOP/s of `device`, for MFU: the
// datasheet figure for H100/H200 parts, else an estimate from the compute
// capability, multiprocessor count and maximum clock; 0 when unknown.
double EstimatedCudaPeakFlops(int device);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_CUDA_TRAIN_MODEL_H_
