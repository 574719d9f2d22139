// TrainModel: what the Trainer needs of a model, so one training loop drives
// the CPU Gpt<float> and the GPU GptCuda (worker/train/cuda_train_model.h).
//
// A TrainModel computes on its own device and keeps a host Gpt<float> in the
// same Param layout for what crosses the process boundary: checkpoints and
// the starting state rank 0 broadcasts. For the CPU model that host model is
// the model itself; for a GPU model it is a copy, refreshed by SyncToHost and
// read back by LoadFromHost. Gradients are summed over the ranks by the
// model (AllReduceGrads) because only it knows where they live: host memory
// through the job's communicator, device memory through NCCL. Not
// thread-safe.
#ifndef KILN_WORKER_TRAIN_TRAIN_MODEL_H_
#define KILN_WORKER_TRAIN_TRAIN_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/statusor.h"
#include "kernels/cpu/ops.h"
#include "worker/dist/communicator.h"
#include "worker/model/gpt.h"

namespace kiln::train {

class TrainModel {
 public:
  virtual ~TrainModel() = default;

  // "cpu", or "cuda:N": where the model computes (for the logs).
  virtual std::string device() const = 0;
  virtual const model::GptConfig& config() const = 0;
  virtual int64_t num_parameters() const = 0;

  // As Gpt::Forward: the mean loss with targets (kept for Backward).
  virtual StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets, int B, int T) = 0;
  // As Gpt::Backward: adds the last Forward's gradients times `loss_scale`.
  virtual Status Backward(float loss_scale) = 0;
  virtual Status ZeroGrad() = 0;
  // Sums the gradients over the ranks (in place; every rank ends with the
  // same sums). A no-op in a single process.
  virtual Status AllReduceGrads() = 0;
  // sqrt of the sum of squared gradients.
  virtual StatusOr<double> GradNorm() = 0;
  // One AdamW step with the gradients times `grad_scale` (the 1/ranks of the
  // average and the clipping factor), decaying only the matrices.
  virtual Status Update(const kernels::cpu::AdamWParams& adam, float grad_scale) = 0;

  // The host model: its params, adam_m and adam_v are what checkpoints hold.
  virtual model::Gpt<float>& host() = 0;
  // Copies the model's state into host() (before a checkpoint).
  virtual Status SyncToHost() = 0;
  // Makes host()'s state the model's (after a restore or a broadcast).
  virtual Status LoadFromHost() = 0;
};

// Makes the model a run trains, from the final config (vocabulary from the
// data) and the seed. The Trainer's default is NewCpuTrainModel.
using TrainModelFactory =
    std::function<StatusOr<std::unique_ptr<TrainModel>>(const model::GptConfig&, uint64_t seed)>;

// The CPU model. Gradients are summed through `comm` (not owned; null or a
// world of one: no reduction), which must outlive the model.
StatusOr<std::unique_ptr<TrainModel>> NewCpuTrainModel(const model::GptConfig& config,
                                                       uint64_t seed, dist::Communicator* comm);

}  // namespace kiln::train

#endif  // KILN_WORKER_TRAIN_TRAIN_MODEL_H_
