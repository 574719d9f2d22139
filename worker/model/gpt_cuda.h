// GptCuda: the GPT of worker/model/gpt.h trained on one GPU in bf16 mixed
// precision, over the kernels of kernels/cuda. It computes the same function
// as Gpt<float> (same parameter layout, initialisation, loss, AdamW and decay
// mask), so checkpoints move between the CPU and GPU paths unchanged.
//
// Precision (kernels/cuda/precision.h): parameters live on the device as
// float32 master weights plus a bf16 copy that the forward and backward read
// (refreshed by every Update and LoadStateFromHost); gradients and AdamW's m
// and v are float32; activations and their gradients are bf16, with float
// LayerNorm statistics and per-position losses. Activations are sized for a
// batch on the first Forward and regrown when a larger one comes.
//
// All work runs in order on one CUDA stream of its own, an ordinary blocking
// stream (so the legacy default stream orders with it). Every method makes
// the model's device current first. Not thread-safe.
#ifndef KILN_WORKER_MODEL_GPT_CUDA_H_
#define KILN_WORKER_MODEL_GPT_CUDA_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/statusor.h"
#include "kernels/cpu/ops.h"
#include "worker/model/gpt.h"

namespace kiln::model {

class GptCuda {
 public:
  // The model on CUDA device `device`, initialised exactly as
  // Gpt<float>::Create(config, seed) (it builds that model on the host and
  // uploads it). InvalidArgument for a bad config; Unavailable or Internal,
  // naming the CUDA error, when the device cannot provide it.
  static StatusOr<GptCuda> Create(const GptConfig& config, uint64_t seed, int device = 0);

  GptCuda(GptCuda&& other) noexcept;
  GptCuda& operator=(GptCuda&& other) noexcept;
  GptCuda(const GptCuda&) = delete;
  GptCuda& operator=(const GptCuda&) = delete;
  ~GptCuda();

  const GptConfig& config() const;
  int64_t num_parameters() const;

  // Runs the model on host inputs [B,T]. With host targets, returns the mean
  // cross-entropy loss (and keeps what Backward needs); without, returns 0
  // and only Logits() is meaningful. Waits for the device when there are
  // targets (to read the loss). InvalidArgument, as Gpt::Forward, for T above
  // max_seq_len or a token outside the vocabulary.
  StatusOr<float> Forward(const int32_t* inputs, const int32_t* targets, int B, int T);

  // Logits [B,T,Vp] of the last Forward, as floats (downloaded; columns
  // V..Vp-1 are padding). FailedPrecondition after Backward, which turns
  // them into their gradient in place.
  StatusOr<std::vector<float>> Logits();

  // Adds the gradients of the last Forward's mean loss, times `loss_scale`
  // (1/steps for gradient accumulation), to the float gradients. Once per
  // Forward with targets; FailedPrecondition otherwise.
  Status Backward(float loss_scale = 1.0f);
  Status ZeroGrad();

  // sqrt of the sum of squared gradients (waits for the device).
  StatusOr<float> GlobalNorm();

  // One AdamW step on every parameter with gradients times `grad_scale` (1,
  // or the clipping factor), decaying only the matrices as Gpt::Update.
  Status Update(const kernels::cpu::AdamWParams& adam, float grad_scale = 1.0f);

  // The float32 gradients on the device (num_parameters(), Param layout), for
  // a device-memory Communicator (worker/dist/nccl_communicator.h). Call
  // Synchronize() before another stream reads them.
  float* device_grads();
  // Waits for all work queued on the model's stream.
  Status Synchronize();

  // Host copies in the Param layout of Gpt<float>, each num_parameters()
  // floats (InvalidArgument otherwise): what checkpoints hold.
  Status CopyStateToHost(std::span<float> params, std::span<float> m, std::span<float> v);
  Status LoadStateFromHost(std::span<const float> params, std::span<const float> m,
                           std::span<const float> v);
  Status CopyGradsToHost(std::span<float> grads);

 private:
  struct Impl;
  explicit GptCuda(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::model

#endif  // KILN_WORKER_MODEL_GPT_CUDA_H_
