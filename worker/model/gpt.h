// Gpt: kiln's GPT-2-style decoder-only transformer on the CPU — learned
// positions, pre-LayerNorm blocks (attention, then a GELU MLP), tied input and
// output embeddings — with forward, backward and AdamW, built on the kernels
// in kernels/cpu/ops.h. Templated on the scalar: float trains, double serves
// the gradient checks. Activations are sized for a batch on the first
// Forward and reused while B and T stay within it. Not thread-safe (the
// kernels themselves use all cores).
#ifndef KILN_WORKER_MODEL_GPT_H_
#define KILN_WORKER_MODEL_GPT_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/statusor.h"
#include "kernels/cpu/ops.h"

namespace kiln::model {

struct GptConfig {
  int max_seq_len = 1024;       // Context length (positions).
  int vocab_size = 257;         // Real tokens.
  int padded_vocab_size = 320;  // Rows of the embedding, a multiple of 64 for fast kernels.
  int num_layers = 12;
  int num_heads = 12;
  int channels = 768;

  // InvalidArgument naming the field unless every size is positive, channels
  // is a multiple of num_heads and padded_vocab_size >= vocab_size; also
  // when the parameter count overflows int64.
  Status Validate() const;
  // InvalidArgument unless B and T are positive, T <= max_seq_len and every
  // input (and target, when given) is a token of the vocabulary.
  Status CheckBatch(const int32_t* inputs, const int32_t* targets, int B, int T) const;
  // The parameters a model of this shape has (params(), grads(), adam_m()
  // and adam_v() hold that many each); -1 when the count overflows int64.
  int64_t NumParameters() const;
  // padded_vocab_size rounded up from vocab_size to a multiple of 64.
  static int PadVocab(int vocab_size) { return (vocab_size + 63) / 64 * 64; }
};

// The parameter tensors, in the order they are laid out in one buffer.
enum class Param : int {
  kWte,       // [Vp, C]
  kWpe,       // [maxT, C]
  kLn1W,      // [L, C]
  kLn1B,      // [L, C]
  kQkvW,      // [L, 3C, C]
  kQkvB,      // [L, 3C]
  kAttProjW,  // [L, C, C]
  kAttProjB,  // [L, C]
  kLn2W,      // [L, C]
  kLn2B,      // [L, C]
  kFcW,       // [L, 4C, C]
  kFcB,       // [L, 4C]
  kFcProjW,   // [L, C, 4C]
  kFcProjB,   // [L, C]
  kLnfW,      // [C]
  kLnfB,      // [C]
  kCount
};
const char* ParamName(Param p);
// The 2-D weight matrices (embeddings and projections): initialised N(0, std)
// and weight-decayed; LayerNorm parameters and biases are neither.
constexpr bool IsMatrix(Param p) {
  return p == Param::kWte || p == Param::kWpe || p == Param::kQkvW || p == Param::kAttProjW ||
         p == Param::kFcW || p == Param::kFcProjW;
}

template <class F>
class Gpt {
 public:
  // Weights initialised as GPT-2: N(0, 0.02), residual projections scaled by
  // 1/sqrt(2L), biases 0, LayerNorm weights 1; deterministic for a seed.
  static StatusOr<Gpt> Create(const GptConfig& config, uint64_t seed);

  const GptConfig& config() const { return config_; }
  int64_t num_parameters() const { return static_cast<int64_t>(params_.size()); }
  std::span<F> params() { return params_; }
  std::span<F> grads() { return grads_; }
  std::span<F> param(Param p);
  // Where tensor `p` starts in params() (and grads(), adam_m(), adam_v()).
  int64_t offset(Param p) const { return offsets_[static_cast<int>(p)]; }
  std::span<const F> params() const { return params_; }
  std::span<F> grad(Param p);
  // AdamW's first and second moments, laid out like params() (checkpoints).
  std::span<F> adam_m() { return m_; }
  std::span<F> adam_v() { return v_; }

  // Runs the model on inputs [B,T]. With targets, computes the mean
  // cross-entropy loss (returned; also kept for Backward). Without targets
  // returns 0 and only logits are meaningful. InvalidArgument for T above
  // max_seq_len or a token outside the vocabulary.
  StatusOr<F> Forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  // Logits [B,T,Vp] of the last Forward.
  std::span<const F> logits() const { return logits_view_; }

  // Gradients of the mean loss of the last Forward (which needs targets);
  // they are added to grads(), so call ZeroGrad first unless accumulating.
  // `loss_scale` multiplies them (1/steps for gradient accumulation).
  Status Backward(F loss_scale = F(1));
  void ZeroGrad();
  // One AdamW step on all parameters (LayerNorm and biases are not decayed).
  void Update(const kernels::cpu::AdamWParams& adam);

 private:
  struct Acts;
  Gpt() = default;
  void Allocate(int B, int T);
  std::span<F> Slice(std::vector<F>& buf, Param p);

  GptConfig config_;
  int64_t offsets_[static_cast<int>(Param::kCount) + 1] = {};
  std::vector<F> params_, grads_, m_, v_;
  bool decay_[static_cast<int>(Param::kCount)] = {};  // Per tensor: weight decay applies.
  // Activations and their gradients, one buffer each.
  std::vector<F> acts_, dacts_;
  std::vector<int32_t> inputs_, targets_;
  int B_ = 0, T_ = 0, alloc_B_ = 0, alloc_T_ = 0;
  bool have_targets_ = false;
  std::span<const F> logits_view_;
};

extern template class Gpt<float>;
extern template class Gpt<double>;

}  // namespace kiln::model

#endif  // KILN_WORKER_MODEL_GPT_H_
