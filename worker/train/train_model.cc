#include "worker/train/train_model.h"

namespace kiln::train {
namespace {

class CpuTrainModel final : public TrainModel {
 public:
  CpuTrainModel(model::Gpt<float> model, dist::Communicator* comm)
      : model_(std::move(model)), comm_(comm) {}

  std::string device() const override { return "cpu"; }
  const model::GptConfig& config() const override { return model_.config(); }
  int64_t num_parameters() const override { return model_.num_parameters(); }

  StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets, int B, int T) override {
    return model_.Forward(inputs, targets, B, T);
  }
  Status Backward(float loss_scale) override { return model_.Backward(loss_scale); }
  Status ZeroGrad() override {
    model_.ZeroGrad();
    return Status::Ok();
  }
  Status AllReduceGrads() override {
    if (comm_ == nullptr || comm_->world_size() == 1) return Status::Ok();
    const std::span<float> g = model_.grads();
    return comm_->AllReduceSum(g.data(), static_cast<int64_t>(g.size()));
  }
  StatusOr<double> GradNorm() override {
    const std::span<float> g = model_.grads();
    return kernels::cpu::GlobalNorm(g.data(), static_cast<int64_t>(g.size()));
  }
  Status Update(const kernels::cpu::AdamWParams& adam, float grad_scale) override {
    if (grad_scale != 1.0f) {
      for (float& g : model_.grads()) g *= grad_scale;
    }
    model_.Update(adam);
    return Status::Ok();
  }

  model::Gpt<float>& host() override { return model_; }
  Status SyncToHost() override { return Status::Ok(); }
  Status LoadFromHost() override { return Status::Ok(); }

 private:
  model::Gpt<float> model_;
  dist::Communicator* comm_;
};

}  // namespace

StatusOr<std::unique_ptr<TrainModel>> NewCpuTrainModel(const model::GptConfig& config,
                                                       uint64_t seed, dist::Communicator* comm) {
  KILN_ASSIGN_OR_RETURN(auto model, model::Gpt<float>::Create(config, seed));
  return std::unique_ptr<TrainModel>(new CpuTrainModel(std::move(model), comm));
}

}  // namespace kiln::train
