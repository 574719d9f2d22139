// worker/model/gpt_cuda.h: the forward and backward of worker/model/gpt.cc
// as kernels/cuda launches on the model's stream. The activations of one
// batch shape live in one device arena; the activation gradients are one set
// of buffers that every layer reuses, with the residual stream's gradient
// accumulated in place (dresidual).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/classifier.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/global_norm.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/precision.h"
#include "kernels/cuda_check.h"
#include "worker/model/gpt_cuda.h"

namespace kiln::model {
namespace cuda = kernels::cuda;
using cuda::bf16;

namespace {

constexpr int kParamCount = static_cast<int>(Param::kCount);
constexpr std::size_t kAlign = 256;

constexpr std::size_t AlignUp(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The backward's GEMMs write their input gradients (no zeroing first).
constexpr cuda::MatmulBackwardOptions kOverwrite{.overwrite_dinp = true};

// A tensor of the activation arena: one slice per layer (or just one), each
// `stride` bytes and 256-byte aligned.
struct Region {
  std::size_t offset = 0;
  std::size_t stride = 0;
};

// Where everything a batch of B x T needs lives in the arena.
struct ActLayout {
  int B = 0, T = 0;
  // bf16 activations; the per-layer ones are kept for the backward.
  Region encoded, ln1, qkv, atty, att, residual2, ln2, fch, fch_gelu, residual3, lnf, logits;
  // bf16 [BT, C]: the attention and MLP projections, consumed by the
  // residual add right after each is computed.
  Region proj;
  // float LayerNorm statistics (per layer) and per-position losses.
  Region ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, lnf_mean, lnf_rstd, losses;
  // bf16 activation gradients, shared by all layers.
  Region dresidual, dln, datty, dqkv, dfch_gelu, dfch;
  Region inputs, targets;  // int32 [BT]
  Region attention_scratch, encoder_scratch, float_scratch;
  std::size_t attention_bytes = 0, encoder_bytes = 0;
  // Head size 64: the fused attention, which keeps per layer only the
  // log-sum-exp of each query row (float [B, NH, T] in `att`) instead of the
  // bf16 [B, NH, T, T] probabilities.
  bool flash = false;
  // The MLP's GELU (and its derivative) in the GEMM epilogues, which needs
  // 4C a multiple of 8; then dfch_gelu is not needed.
  bool fused_gelu = false;
  std::size_t total = 0;
};

StatusOr<ActLayout> MakeLayout(const GptConfig& c, int B, int T) {
  ActLayout a;
  a.B = B;
  a.T = T;
  const int N = B * T;
  const auto BT = static_cast<std::size_t>(N), C = static_cast<std::size_t>(c.channels);
  const auto L = static_cast<std::size_t>(c.num_layers);
  const auto NH = static_cast<std::size_t>(c.num_heads);
  const auto Vp = static_cast<std::size_t>(c.padded_vocab_size);
  const std::size_t h = sizeof(bf16), f = sizeof(float);
  std::size_t at = 0;
  auto take = [&at](std::size_t bytes, std::size_t layers) {
    const Region r{at, AlignUp(bytes)};
    at += r.stride * layers;
    return r;
  };
  a.encoded = take(BT * C * h, 1);
  a.ln1 = take(BT * C * h, L);
  a.qkv = take(BT * 3 * C * h, L);
  a.atty = take(BT * C * h, L);
  a.flash = cuda::FlashAttentionSupported(c.channels / c.num_heads);
  a.att = a.flash ? take(BT * NH * f, L) : take(BT * NH * static_cast<std::size_t>(T) * h, L);
  a.residual2 = take(BT * C * h, L);
  a.ln2 = take(BT * C * h, L);
  a.fch = take(BT * 4 * C * h, L);
  a.fch_gelu = take(BT * 4 * C * h, L);
  a.residual3 = take(BT * C * h, L);
  a.lnf = take(BT * C * h, 1);
  a.logits = take(BT * Vp * h, 1);
  a.proj = take(BT * C * h, 1);
  a.ln1_mean = take(BT * f, L);
  a.ln1_rstd = take(BT * f, L);
  a.ln2_mean = take(BT * f, L);
  a.ln2_rstd = take(BT * f, L);
  a.lnf_mean = take(BT * f, 1);
  a.lnf_rstd = take(BT * f, 1);
  a.losses = take(BT * f, 1);
  a.dresidual = take(BT * C * h, 1);
  a.dln = take(BT * C * h, 1);
  a.datty = take(BT * C * h, 1);
  a.dqkv = take(BT * 3 * C * h, 1);
  a.fused_gelu = 4 * C % 8 == 0;
  a.dfch_gelu = take(a.fused_gelu ? 0 : BT * 4 * C * h, 1);
  a.dfch = take(BT * 4 * C * h, 1);
  a.inputs = take(BT * sizeof(int32_t), 1);
  a.targets = take(BT * sizeof(int32_t), 1);
  a.attention_bytes = a.flash ? cuda::FlashAttentionBackwardScratchBytes(B, T, c.num_heads)
                              : cuda::AttentionScratchBytes(B, T, c.channels, c.num_heads);
  a.attention_scratch = take(a.attention_bytes, 1);
  KILN_ASSIGN_OR_RETURN(a.encoder_bytes, cuda::EncoderBackwardScratchBytes(B, T));
  a.encoder_scratch = take(a.encoder_bytes, 1);
  // The widest bias gradient is the MLP's (4C); LayerNorm's takes 2C per chunk.
  const std::size_t scratch_floats = std::max(cuda::MatmulBackwardScratchFloats(N, 4 * c.channels),
                                              cuda::LayerNormBackwardScratchFloats(N, c.channels));
  a.float_scratch = take(scratch_floats * f, 1);
  a.total = at;
  return a;
}

}  // namespace

struct GptCuda::Impl {
  GptConfig config;
  int device = 0;
  int64_t num_params = 0;
  int64_t offsets[kParamCount + 1] = {};  // Of each tensor, in floats: Gpt<float>'s layout.
  cudaStream_t stream = nullptr;
  std::optional<cuda::Blas> blas;
  gpu::DeviceBuffer<float> params, grads, m, v;
  gpu::DeviceBuffer<bf16> params_bf16;
  gpu::DeviceBuffer<float> norm;  // The norm, then GlobalNorm's scratch.
  gpu::DeviceBuffer<char> acts;
  std::optional<ActLayout> layout;  // Of the last Forward.
  bool has_logits = false;          // The last Forward completed and Backward has not run since.
  bool has_targets = false;         // ... and it had targets.
  std::vector<float> host_losses;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    // Free on the model's device (members go after this body).
    cudaSetDevice(device);
    blas.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  int64_t Offset(Param p) const { return offsets[static_cast<int>(p)]; }
  float* P(Param p) const { return params.get() + Offset(p); }
  bf16* W(Param p) const { return params_bf16.get() + Offset(p); }
  float* G(Param p) const { return grads.get() + Offset(p); }

  char* base() const { return acts.get(); }
  template <class T>
  T* At(const Region& r, int layer = 0) const {
    return reinterpret_cast<T*>(base() + r.offset + static_cast<std::size_t>(layer) * r.stride);
  }
  bf16* H(const Region& r, int layer = 0) const { return At<bf16>(r, layer); }
  float* F(const Region& r, int layer = 0) const { return At<float>(r, layer); }
  // Zeroes one slice of r (the whole tensor for this batch shape).
  Status Zero(const Region& r) const {
    KILN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(base() + r.offset, 0, r.stride, stream));
    return Status::Ok();
  }

  Status UseDevice() const {
    KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    return Status::Ok();
  }

  // Lays the arena out for B x T, growing it when it is too small.
  Status Allocate(int B, int T) {
    if (!layout.has_value() || layout->B != B || layout->T != T) {
      layout.reset();
      KILN_ASSIGN_OR_RETURN(ActLayout l, MakeLayout(config, B, T));
      layout = l;
    }
    if (layout->total > acts.size()) KILN_RETURN_IF_ERROR(acts.Allocate(layout->total));
    return Status::Ok();
  }

  Status Sync() const {
    KILN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return Status::Ok();
  }

  Status RefreshBf16() const {
    return cuda::FloatToBf16(params_bf16.get(), params.get(), num_params, stream);
  }

  Status CheckSize(std::size_t size, const char* what) const {
    if (size == static_cast<std::size_t>(num_params)) return Status::Ok();
    return Status::InvalidArgument(std::string(what) + " holds " + std::to_string(size) +
                                   " floats; the model has " + std::to_string(num_params) +
                                   " parameters");
  }

  Status Forward(const int32_t* inputs, const int32_t* targets, int B, int T);
  Status Backward(float loss_scale);
};

Status GptCuda::Impl::Forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  const GptConfig& c = config;
  const int C = c.channels, L = c.num_layers, NH = c.num_heads;
  const int V = c.vocab_size, Vp = c.padded_vocab_size;
  const int N = B * T;
  KILN_RETURN_IF_ERROR(Allocate(B, T));
  const ActLayout& a = *layout;
  const cuda::Blas& bl = *blas;
  cudaStream_t st = stream;
  const auto tokens_bytes = static_cast<std::size_t>(N) * sizeof(int32_t);
  int32_t* d_inputs = At<int32_t>(a.inputs);
  KILN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(d_inputs, inputs, tokens_bytes, cudaMemcpyHostToDevice, st));
  if (targets != nullptr) {
    KILN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(At<int32_t>(a.targets), targets, tokens_bytes, cudaMemcpyHostToDevice, st));
  }

  KILN_RETURN_IF_ERROR(
      cuda::EncoderForward(H(a.encoded), d_inputs, W(Param::kWte), W(Param::kWpe), B, T, C, st));
  KILN_RETURN_IF_ERROR(cuda::LayerNormForward(H(a.ln1), F(a.ln1_mean), F(a.ln1_rstd), H(a.encoded),
                                              W(Param::kLn1W), W(Param::kLn1B), N, C, st));
  for (int l = 0; l < L; ++l) {
    const int64_t lC = static_cast<int64_t>(l) * C;
    const bf16* residual = l == 0 ? H(a.encoded) : H(a.residual3, l - 1);
    KILN_RETURN_IF_ERROR(cuda::MatmulForward(bl, H(a.qkv, l), H(a.ln1, l),
                                             W(Param::kQkvW) + lC * 3 * C, W(Param::kQkvB) + lC * 3,
                                             N, C, 3 * C, st));
    if (a.flash) {
      KILN_RETURN_IF_ERROR(
          cuda::FlashAttentionForward(H(a.atty, l), F(a.att, l), H(a.qkv, l), B, T, C, NH, st));
    } else {
      KILN_RETURN_IF_ERROR(cuda::AttentionForward(bl, H(a.atty, l), H(a.att, l), H(a.qkv, l), B, T,
                                                  C, NH, At<char>(a.attention_scratch),
                                                  a.attention_bytes, st));
    }
    KILN_RETURN_IF_ERROR(cuda::MatmulForward(bl, H(a.proj), H(a.atty, l),
                                             W(Param::kAttProjW) + lC * C, W(Param::kAttProjB) + lC,
                                             N, C, C, st));
    // residual2 = residual + attproj, and ln2 of it.
    KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(
        H(a.residual2, l), H(a.ln2, l), F(a.ln2_mean, l), F(a.ln2_rstd, l), residual, H(a.proj),
        W(Param::kLn2W) + lC, W(Param::kLn2B) + lC, N, C, st));
    if (a.fused_gelu) {
      KILN_RETURN_IF_ERROR(cuda::MatmulGeluForward(bl, H(a.fch_gelu, l), H(a.fch, l), H(a.ln2, l),
                                                   W(Param::kFcW) + lC * 4 * C,
                                                   W(Param::kFcB) + lC * 4, N, C, 4 * C, st));
    } else {
      KILN_RETURN_IF_ERROR(cuda::MatmulForward(bl, H(a.fch, l), H(a.ln2, l),
                                               W(Param::kFcW) + lC * 4 * C, W(Param::kFcB) + lC * 4,
                                               N, C, 4 * C, st));
      KILN_RETURN_IF_ERROR(
          cuda::GeluForward(H(a.fch_gelu, l), H(a.fch, l), static_cast<int64_t>(N) * 4 * C, st));
    }
    KILN_RETURN_IF_ERROR(cuda::MatmulForward(bl, H(a.proj), H(a.fch_gelu, l),
                                             W(Param::kFcProjW) + lC * 4 * C,
                                             W(Param::kFcProjB) + lC, N, 4 * C, C, st));
    // residual3 = residual2 + fcproj, and the LayerNorm that reads it: the
    // next layer's ln1, or lnf after the last layer.
    if (l + 1 < L) {
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(
          H(a.residual3, l), H(a.ln1, l + 1), F(a.ln1_mean, l + 1), F(a.ln1_rstd, l + 1),
          H(a.residual2, l), H(a.proj), W(Param::kLn1W) + lC + C, W(Param::kLn1B) + lC + C, N, C,
          st));
    } else {
      KILN_RETURN_IF_ERROR(cuda::ResidualLayerNormForward(
          H(a.residual3, l), H(a.lnf), F(a.lnf_mean), F(a.lnf_rstd), H(a.residual2, l), H(a.proj),
          W(Param::kLnfW), W(Param::kLnfB), N, C, st));
    }
  }
  KILN_RETURN_IF_ERROR(
      cuda::MatmulForward(bl, H(a.logits), H(a.lnf), W(Param::kWte), nullptr, N, C, Vp, st));
  if (targets == nullptr) return Status::Ok();
  // Losses only: the logits stay for Logits() and for Backward, which turns
  // them into their gradient.
  return cuda::FusedClassifier(nullptr, F(a.losses), H(a.logits), At<int32_t>(a.targets), 0.0f, N,
                               V, Vp, st);
}

Status GptCuda::Impl::Backward(float loss_scale) {
  const GptConfig& c = config;
  const ActLayout& a = *layout;
  const int B = a.B, T = a.T, N = B * T;
  const int C = c.channels, L = c.num_layers, NH = c.num_heads;
  const int V = c.vocab_size, Vp = c.padded_vocab_size;
  const cuda::Blas& bl = *blas;
  cudaStream_t st = stream;
  float* scratch = F(a.float_scratch);

  // d(mean loss)/d(loss_n) = loss_scale / N; the logits become their gradient.
  bf16* dlogits = H(a.logits);
  KILN_RETURN_IF_ERROR(cuda::FusedClassifier(dlogits, F(a.losses), H(a.logits),
                                             At<int32_t>(a.targets),
                                             loss_scale / static_cast<float>(N), N, V, Vp, st));
  KILN_RETURN_IF_ERROR(cuda::MatmulBackward(bl, H(a.dln), G(Param::kWte), nullptr, dlogits,
                                            H(a.lnf), W(Param::kWte), N, C, Vp, scratch, st,
                                            kOverwrite));
  KILN_RETURN_IF_ERROR(Zero(a.dresidual));
  KILN_RETURN_IF_ERROR(cuda::LayerNormBackward(H(a.dresidual), G(Param::kLnfW), G(Param::kLnfB),
                                               H(a.dln), H(a.residual3, L - 1), W(Param::kLnfW),
                                               F(a.lnf_mean), F(a.lnf_rstd), N, C, scratch, st));
  // dresidual holds the gradient of the residual stream at the current
  // point: of residual3 entering each layer's backward, of residual2 after
  // ln2's backward adds to it, of the layer's input after ln1's.
  for (int l = L - 1; l >= 0; --l) {
    const int64_t lC = static_cast<int64_t>(l) * C;
    const bf16* residual = l == 0 ? H(a.encoded) : H(a.residual3, l - 1);
    // residual3 = residual2 + fcproj: dfcproj is dresidual. With the fused
    // GELU the GEMM's epilogue turns d(fch_gelu) into d(fch) directly.
    if (a.fused_gelu) {
      KILN_RETURN_IF_ERROR(cuda::MatmulBackward(
          bl, H(a.dfch), G(Param::kFcProjW) + lC * 4 * C, G(Param::kFcProjB) + lC, H(a.dresidual),
          H(a.fch_gelu, l), W(Param::kFcProjW) + lC * 4 * C, N, 4 * C, C, scratch, st,
          {.overwrite_dinp = true, .gelu_input = H(a.fch, l)}));
    } else {
      KILN_RETURN_IF_ERROR(cuda::MatmulBackward(bl, H(a.dfch_gelu), G(Param::kFcProjW) + lC * 4 * C,
                                                G(Param::kFcProjB) + lC, H(a.dresidual),
                                                H(a.fch_gelu, l), W(Param::kFcProjW) + lC * 4 * C,
                                                N, 4 * C, C, scratch, st, kOverwrite));
      KILN_RETURN_IF_ERROR(Zero(a.dfch));
      KILN_RETURN_IF_ERROR(cuda::GeluBackward(H(a.dfch), H(a.fch, l), H(a.dfch_gelu),
                                              static_cast<int64_t>(N) * 4 * C, st));
    }
    KILN_RETURN_IF_ERROR(cuda::MatmulBackward(
        bl, H(a.dln), G(Param::kFcW) + lC * 4 * C, G(Param::kFcB) + lC * 4, H(a.dfch), H(a.ln2, l),
        W(Param::kFcW) + lC * 4 * C, N, C, 4 * C, scratch, st, kOverwrite));
    KILN_RETURN_IF_ERROR(cuda::LayerNormBackward(
        H(a.dresidual), G(Param::kLn2W) + lC, G(Param::kLn2B) + lC, H(a.dln), H(a.residual2, l),
        W(Param::kLn2W) + lC, F(a.ln2_mean, l), F(a.ln2_rstd, l), N, C, scratch, st));
    // residual2 = residual + attproj: dattproj is dresidual.
    KILN_RETURN_IF_ERROR(cuda::MatmulBackward(
        bl, H(a.datty), G(Param::kAttProjW) + lC * C, G(Param::kAttProjB) + lC, H(a.dresidual),
        H(a.atty, l), W(Param::kAttProjW) + lC * C, N, C, C, scratch, st, kOverwrite));
    if (a.flash) {  // Writes all of dqkv.
      KILN_RETURN_IF_ERROR(cuda::FlashAttentionBackward(
          H(a.dqkv), H(a.datty), H(a.qkv, l), H(a.atty, l), F(a.att, l), B, T, C, NH,
          At<char>(a.attention_scratch), a.attention_bytes, st));
    } else {
      KILN_RETURN_IF_ERROR(Zero(a.dqkv));
      KILN_RETURN_IF_ERROR(
          cuda::AttentionBackward(bl, H(a.dqkv), H(a.datty), H(a.qkv, l), H(a.att, l), B, T, C, NH,
                                  At<char>(a.attention_scratch), a.attention_bytes, st));
    }
    KILN_RETURN_IF_ERROR(cuda::MatmulBackward(
        bl, H(a.dln), G(Param::kQkvW) + lC * 3 * C, G(Param::kQkvB) + lC * 3, H(a.dqkv),
        H(a.ln1, l), W(Param::kQkvW) + lC * 3 * C, N, C, 3 * C, scratch, st, kOverwrite));
    KILN_RETURN_IF_ERROR(cuda::LayerNormBackward(
        H(a.dresidual), G(Param::kLn1W) + lC, G(Param::kLn1B) + lC, H(a.dln), residual,
        W(Param::kLn1W) + lC, F(a.ln1_mean, l), F(a.ln1_rstd, l), N, C, scratch, st));
  }
  return cuda::EncoderBackward(G(Param::kWte), G(Param::kWpe), H(a.dresidual),
                               At<int32_t>(a.inputs), B, T, C, At<char>(a.encoder_scratch),
                               a.encoder_bytes, st);
}

GptCuda::GptCuda(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GptCuda::GptCuda(GptCuda&& other) noexcept = default;
GptCuda& GptCuda::operator=(GptCuda&& other) noexcept = default;
GptCuda::~GptCuda() = default;

StatusOr<GptCuda> GptCuda::Create(const GptConfig& config, uint64_t seed, int device) {
  KILN_ASSIGN_OR_RETURN(Gpt<float> host, Gpt<float>::Create(config, seed));
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->device = device;
  KILN_RETURN_IF_ERROR(impl->UseDevice());
  KILN_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&impl->stream));
  KILN_ASSIGN_OR_RETURN(cuda::Blas blas, cuda::Blas::Create());
  impl->blas.emplace(std::move(blas));
  // The offsets of Gpt<float>'s tensors, so both share one layout.
  const float* origin = host.params().data();
  for (int i = 0; i < kParamCount; ++i) {
    impl->offsets[i] = host.param(static_cast<Param>(i)).data() - origin;
  }
  impl->num_params = host.num_parameters();
  impl->offsets[kParamCount] = impl->num_params;
  const auto n = static_cast<std::size_t>(impl->num_params);
  KILN_RETURN_IF_ERROR(impl->params.Allocate(n));
  KILN_RETURN_IF_ERROR(impl->params_bf16.Allocate(n));
  KILN_RETURN_IF_ERROR(impl->grads.Allocate(n));
  KILN_RETURN_IF_ERROR(impl->m.Allocate(n));
  KILN_RETURN_IF_ERROR(impl->v.Allocate(n));
  KILN_RETURN_IF_ERROR(impl->norm.Allocate(1 + cuda::GlobalNormScratchFloats()));
  GptCuda model(std::move(impl));
  KILN_RETURN_IF_ERROR(model.LoadStateFromHost(host.params(), host.adam_m(), host.adam_v()));
  KILN_RETURN_IF_ERROR(model.ZeroGrad());
  KILN_RETURN_IF_ERROR(model.Synchronize());
  return StatusOr<GptCuda>(std::move(model));
}

const GptConfig& GptCuda::config() const { return impl_->config; }

int64_t GptCuda::num_parameters() const { return impl_->num_params; }

StatusOr<float> GptCuda::Forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  Impl& s = *impl_;
  const GptConfig& c = s.config;
  if (static_cast<int64_t>(B) * T > INT_MAX) {
    return Status::InvalidArgument("batch times sequence must fit in int32");
  }
  KILN_RETURN_IF_ERROR(c.CheckBatch(inputs, targets, B, T));
  const int64_t BT = static_cast<int64_t>(B) * T;
  s.has_logits = false;
  s.has_targets = false;
  KILN_RETURN_IF_ERROR(s.UseDevice());
  KILN_RETURN_IF_ERROR(s.Forward(inputs, targets, B, T));
  if (targets == nullptr) {
    s.has_logits = true;
    return 0.0f;
  }
  s.host_losses.resize(static_cast<std::size_t>(BT));
  KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.host_losses.data(), s.F(s.layout->losses),
                                            s.host_losses.size() * sizeof(float),
                                            cudaMemcpyDeviceToHost, s.stream));
  KILN_RETURN_IF_ERROR(s.Sync());
  double sum = 0;
  for (float loss : s.host_losses) sum += loss;
  s.has_logits = true;
  s.has_targets = true;
  return static_cast<float>(sum / static_cast<double>(BT));
}

StatusOr<std::vector<float>> GptCuda::Logits() {
  Impl& s = *impl_;
  if (!s.has_logits) return Status::FailedPrecondition("no Forward has produced logits");
  KILN_RETURN_IF_ERROR(s.UseDevice());
  const ActLayout& a = *s.layout;
  const auto count = static_cast<std::size_t>(a.B) * static_cast<std::size_t>(a.T) *
                     static_cast<std::size_t>(s.config.padded_vocab_size);
  std::vector<uint16_t> bits(count);
  KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bits.data(), s.H(a.logits), count * sizeof(uint16_t),
                                            cudaMemcpyDeviceToHost, s.stream));
  KILN_RETURN_IF_ERROR(s.Sync());
  // A bf16 is the upper half of the float with the same value.
  std::vector<float> logits(count);
  for (std::size_t i = 0; i < count; ++i) {
    const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&logits[i], &u, sizeof(float));
  }
  return logits;
}

Status GptCuda::Backward(float loss_scale) {
  Impl& s = *impl_;
  if (!s.has_targets) {
    return Status::FailedPrecondition(
        "Backward needs a Forward with targets (once: it consumes the logits)");
  }
  KILN_RETURN_IF_ERROR(s.UseDevice());
  // Whatever happens below, the logits are no longer intact.
  s.has_targets = false;
  s.has_logits = false;
  return s.Backward(loss_scale);
}

Status GptCuda::ZeroGrad() {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.UseDevice());
  KILN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      s.grads.get(), 0, static_cast<std::size_t>(s.num_params) * sizeof(float), s.stream));
  return Status::Ok();
}

StatusOr<float> GptCuda::GlobalNorm() {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.UseDevice());
  float* norm = s.norm.get();
  KILN_RETURN_IF_ERROR(cuda::GlobalNorm(norm, s.grads.get(), s.num_params, norm + 1, s.stream));
  float host = 0;
  KILN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&host, norm, sizeof(float), cudaMemcpyDeviceToHost, s.stream));
  KILN_RETURN_IF_ERROR(s.Sync());
  return host;
}

Status GptCuda::Update(const kernels::cpu::AdamWParams& adam, float grad_scale) {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.UseDevice());
  kernels::cpu::AdamWParams no_decay = adam;
  no_decay.weight_decay = 0;
  for (int i = 0; i < kParamCount; ++i) {
    const auto p = static_cast<Param>(i);
    const int64_t n = s.offsets[i + 1] - s.offsets[i];
    KILN_RETURN_IF_ERROR(cuda::AdamW(s.P(p), s.W(p), s.G(p), s.m.get() + s.Offset(p),
                                     s.v.get() + s.Offset(p), n, IsMatrix(p) ? adam : no_decay,
                                     grad_scale, s.stream));
  }
  return Status::Ok();
}

float* GptCuda::device_grads() { return impl_->grads.get(); }

Status GptCuda::Synchronize() {
  KILN_RETURN_IF_ERROR(impl_->UseDevice());
  return impl_->Sync();
}

Status GptCuda::CopyStateToHost(std::span<float> params, std::span<float> m, std::span<float> v) {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.CheckSize(params.size(), "params"));
  KILN_RETURN_IF_ERROR(s.CheckSize(m.size(), "m"));
  KILN_RETURN_IF_ERROR(s.CheckSize(v.size(), "v"));
  KILN_RETURN_IF_ERROR(s.UseDevice());
  const std::size_t bytes = params.size() * sizeof(float);
  const std::pair<float*, const gpu::DeviceBuffer<float>*> copies[] = {
      {params.data(), &s.params}, {m.data(), &s.m}, {v.data(), &s.v}};
  for (const auto& [host, device] : copies) {
    KILN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host, device->get(), bytes, cudaMemcpyDeviceToHost, s.stream));
  }
  return s.Sync();
}

Status GptCuda::LoadStateFromHost(std::span<const float> params, std::span<const float> m,
                                  std::span<const float> v) {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.CheckSize(params.size(), "params"));
  KILN_RETURN_IF_ERROR(s.CheckSize(m.size(), "m"));
  KILN_RETURN_IF_ERROR(s.CheckSize(v.size(), "v"));
  KILN_RETURN_IF_ERROR(s.UseDevice());
  const std::size_t bytes = params.size() * sizeof(float);
  const std::pair<const float*, const gpu::DeviceBuffer<float>*> copies[] = {
      {params.data(), &s.params}, {m.data(), &s.m}, {v.data(), &s.v}};
  for (const auto& [host, device] : copies) {
    KILN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device->get(), host, bytes, cudaMemcpyHostToDevice, s.stream));
  }
  KILN_RETURN_IF_ERROR(s.RefreshBf16());
  return s.Sync();
}

Status GptCuda::CopyGradsToHost(std::span<float> grads) {
  Impl& s = *impl_;
  KILN_RETURN_IF_ERROR(s.CheckSize(grads.size(), "grads"));
  KILN_RETURN_IF_ERROR(s.UseDevice());
  KILN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      grads.data(), s.grads.get(), grads.size() * sizeof(float), cudaMemcpyDeviceToHost, s.stream));
  return s.Sync();
}

}  // namespace kiln::model
