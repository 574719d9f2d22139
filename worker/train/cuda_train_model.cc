#include "worker/train/cuda_train_model.h"

#include <cuda_runtime.h>

#include <string>

#include "worker/model/gpt_cuda.h"

namespace kiln::train {
namespace {

class CudaTrainModel final : public TrainModel {
 public:
  CudaTrainModel(model::GptCuda model, model::Gpt<float> host, int device, dist::Communicator* nccl)
      : model_(std::move(model)), host_(std::move(host)), device_(device), nccl_(nccl) {}

  std::string device() const override { return "cuda:" + std::to_string(device_); }
  const model::GptConfig& config() const override { return model_.config(); }
  int64_t num_parameters() const override { return model_.num_parameters(); }

  StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets, int B, int T) override {
    return model_.Forward(inputs, targets, B, T);
  }
  Status Backward(float loss_scale) override { return model_.Backward(loss_scale); }
  Status ZeroGrad() override { return model_.ZeroGrad(); }
  Status AllReduceGrads() override {
    if (nccl_ == nullptr || nccl_->world_size() == 1) return Status::Ok();
    // NCCL runs on its own stream: the backward's writes must be done.
    KILN_RETURN_IF_ERROR(model_.Synchronize());
    return nccl_->AllReduceSum(model_.device_grads(), model_.num_parameters());
  }
  StatusOr<double> GradNorm() override {
    KILN_ASSIGN_OR_RETURN(float norm, model_.GlobalNorm());
    return static_cast<double>(norm);
  }
  Status Update(const kernels::cpu::AdamWParams& adam, float grad_scale) override {
    return model_.Update(adam, grad_scale);
  }

  model::Gpt<float>& host() override { return host_; }
  Status SyncToHost() override {
    return model_.CopyStateToHost(host_.params(), host_.adam_m(), host_.adam_v());
  }
  Status LoadFromHost() override {
    return model_.LoadStateFromHost(host_.params(), host_.adam_m(), host_.adam_v());
  }

 private:
  model::GptCuda model_;
  model::Gpt<float> host_;
  int device_;
  dist::Communicator* nccl_;
};

}  // namespace

StatusOr<std::unique_ptr<TrainModel>> NewCudaTrainModel(const model::GptConfig& config,
                                                        uint64_t seed, int device,
                                                        dist::Communicator* nccl) {
  KILN_ASSIGN_OR_RETURN(auto model, model::GptCuda::Create(config, seed, device));
  // The host copy starts equal to the device's (same seed, same init).
  KILN_ASSIGN_OR_RETURN(auto host, model::Gpt<float>::Create(config, seed));
  return std::unique_ptr<TrainModel>(
      new CudaTrainModel(std::move(model), std::move(host), device, nccl));
}

double EstimatedCudaPeakFlops(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return 0;
  // NVIDIA's datasheet figures (dense bf16 with fp32 accumulation) where the
  // name says which part it is.
  const std::string name = prop.name;
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) {
    if (name.find("PCIe") != std::string::npos) return 756e12;  // H100 PCIe.
    if (name.find("NVL") != std::string::npos) return 835e12;   // H100 NVL, H200 NVL.
    return 989e12;                                              // H100 and H200 SXM.
  }
  // Otherwise: tensor-core FLOPs per multiprocessor per clock (the
  // architecture whitepapers: A100 2048, Ada and GA10x 512, Hopper 4096,
  // Blackwell 8192) at the maximum clock — an upper bound.
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) != cudaSuccess) return 0;
  int per_clock = 0;
  if (prop.major == 8) per_clock = prop.minor == 0 ? 2048 : 512;
  if (prop.major == 9) per_clock = 4096;
  if (prop.major == 10) per_clock = 8192;
  return static_cast<double>(per_clock) * prop.multiProcessorCount * khz * 1e3;
}

}  // namespace kiln::train
