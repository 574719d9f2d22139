#include "worker/model/gpt.h"

#include <cmath>
#include <random>

#include "kernels/cpu/cpu_features.h"

namespace kiln::model {
namespace cpu = kernels::cpu;

namespace {

constexpr int kParams = static_cast<int>(Param::kCount);

// Each parameter tensor's element count, in Param order; false when one of
// them or their sum overflows int64 (a shape read from a file may say anything).
bool ParamSizes(const GptConfig& c, int64_t (&sizes)[kParams]) {
  const int64_t C = c.channels, L = c.num_layers;
  // {a, b, c}: a * b * c elements.
  const int64_t factors[kParams][3] = {{c.padded_vocab_size, C, 1},
                                       {c.max_seq_len, C, 1},
                                       {L, C, 1},
                                       {L, C, 1},
                                       {L, 3 * C, C},
                                       {L, 3 * C, 1},
                                       {L, C, C},
                                       {L, C, 1},
                                       {L, C, 1},
                                       {L, C, 1},
                                       {L, 4 * C, C},
                                       {L, 4 * C, 1},
                                       {L, C, 4 * C},
                                       {L, C, 1},
                                       {C, 1, 1},
                                       {C, 1, 1}};
  int64_t total = 0;
  for (int i = 0; i < kParams; ++i) {
    if (__builtin_mul_overflow(factors[i][0], factors[i][1], &sizes[i]) ||
        __builtin_mul_overflow(sizes[i], factors[i][2], &sizes[i]) ||
        __builtin_add_overflow(total, sizes[i], &total)) {
      return false;
    }
  }
  return true;
}

}  // namespace

int64_t GptConfig::NumParameters() const {
  int64_t sizes[kParams];
  if (!ParamSizes(*this, sizes)) return -1;
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  return total;
}

Status GptConfig::Validate() const {
  auto positive = [](int v, const char* name) {
    return v > 0 ? Status::Ok()
                 : Status::InvalidArgument(std::string(name) + " must be positive, got " +
                                           std::to_string(v));
  };
  KILN_RETURN_IF_ERROR(positive(max_seq_len, "max_seq_len"));
  KILN_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  KILN_RETURN_IF_ERROR(positive(num_layers, "num_layers"));
  KILN_RETURN_IF_ERROR(positive(num_heads, "num_heads"));
  KILN_RETURN_IF_ERROR(positive(channels, "channels"));
  if (channels % num_heads != 0) {
    return Status::InvalidArgument("channels (" + std::to_string(channels) +
                                   ") must be a multiple of num_heads (" +
                                   std::to_string(num_heads) + ")");
  }
  if (padded_vocab_size < vocab_size) {
    return Status::InvalidArgument("padded_vocab_size (" + std::to_string(padded_vocab_size) +
                                   ") must be at least vocab_size (" + std::to_string(vocab_size) +
                                   ")");
  }
  if (NumParameters() < 0) {
    return Status::InvalidArgument("the shape's parameter count overflows a 64-bit integer");
  }
  return Status::Ok();
}

Status GptConfig::CheckBatch(const int32_t* inputs, const int32_t* targets, int B, int T) const {
  if (B <= 0 || T <= 0) return Status::InvalidArgument("batch and sequence must be positive");
  if (T > max_seq_len) {
    return Status::InvalidArgument("sequence length " + std::to_string(T) +
                                   " exceeds max_seq_len " + std::to_string(max_seq_len));
  }
  const int64_t BT = static_cast<int64_t>(B) * T;
  for (int64_t i = 0; i < BT; ++i) {
    if (inputs[i] < 0 || inputs[i] >= vocab_size ||
        (targets != nullptr && (targets[i] < 0 || targets[i] >= vocab_size))) {
      return Status::InvalidArgument("token at position " + std::to_string(i) +
                                     " is outside the vocabulary of " + std::to_string(vocab_size));
    }
  }
  return Status::Ok();
}

const char* ParamName(Param p) {
  static const char* const kNames[] = {"wte",      "wpe",      "ln1w", "ln1b", "qkvw", "qkvb",
                                       "attprojw", "attprojb", "ln2w", "ln2b", "fcw",  "fcb",
                                       "fcprojw",  "fcprojb",  "lnfw", "lnfb"};
  return kNames[static_cast<int>(p)];
}

// Offsets of the activation tensors in one buffer, for a batch of B x T.
template <class F>
struct Gpt<F>::Acts {
  int64_t encoded, ln1, ln1_mean, ln1_rstd, qkv, atty, preatt, att, attproj, residual2, ln2,
      ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, residual3, lnf, lnf_mean, lnf_rstd, logits, probs,
      losses, total;

  Acts(const GptConfig& c, int B, int T) {
    const int64_t BT = static_cast<int64_t>(B) * T, C = c.channels, L = c.num_layers;
    const int64_t NH = c.num_heads, Vp = c.padded_vocab_size;
    int64_t at = 0;
    auto take = [&at](int64_t n) {
      int64_t o = at;
      at += n;
      return o;
    };
    encoded = take(BT * C);
    ln1 = take(L * BT * C);
    ln1_mean = take(L * BT);
    ln1_rstd = take(L * BT);
    qkv = take(L * BT * 3 * C);
    atty = take(L * BT * C);
    preatt = take(L * B * NH * T * T);
    att = take(L * B * NH * T * T);
    attproj = take(L * BT * C);
    residual2 = take(L * BT * C);
    ln2 = take(L * BT * C);
    ln2_mean = take(L * BT);
    ln2_rstd = take(L * BT);
    fch = take(L * BT * 4 * C);
    fch_gelu = take(L * BT * 4 * C);
    fcproj = take(L * BT * C);
    residual3 = take(L * BT * C);
    lnf = take(BT * C);
    lnf_mean = take(BT);
    lnf_rstd = take(BT);
    logits = take(BT * Vp);
    probs = take(BT * Vp);
    losses = take(BT);
    total = at;
  }
};

template <class F>
StatusOr<Gpt<F>> Gpt<F>::Create(const GptConfig& config, uint64_t seed) {
  KILN_RETURN_IF_ERROR(config.Validate());
  KILN_RETURN_IF_ERROR(cpu::CheckCpuSupport());
  Gpt g;
  g.config_ = config;
  const int64_t C = config.channels, L = config.num_layers;
  int64_t sizes[kParams];
  ParamSizes(config, sizes);  // Validate has checked that the sizes fit.
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    g.offsets_[i + 1] = g.offsets_[i] + sizes[i];
  }
  const int64_t n = g.offsets_[static_cast<int>(Param::kCount)];
  g.params_.assign(static_cast<size_t>(n), F(0));
  g.grads_.assign(static_cast<size_t>(n), F(0));
  g.m_.assign(static_cast<size_t>(n), F(0));
  g.v_.assign(static_cast<size_t>(n), F(0));

  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(L));
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    Param p = static_cast<Param>(i);
    std::span<F> t = g.Slice(g.params_, p);
    const bool matrix = IsMatrix(p);
    bool layernorm_weight = p == Param::kLn1W || p == Param::kLn2W || p == Param::kLnfW;
    double std = (p == Param::kAttProjW || p == Param::kFcProjW) ? residual_std : 0.02;
    for (auto& x : t) {
      x = matrix ? static_cast<F>(normal(rng) * std) : (layernorm_weight ? F(1) : F(0));
    }
    g.decay_[i] = matrix;
  }
  // The padding rows of the embedding never see a gradient; keep them zero.
  std::span<F> wte = g.Slice(g.params_, Param::kWte);
  std::fill(wte.begin() + static_cast<int64_t>(config.vocab_size) * C, wte.end(), F(0));
  return g;
}

template <class F>
std::span<F> Gpt<F>::Slice(std::vector<F>& buf, Param p) {
  int i = static_cast<int>(p);
  return std::span<F>(buf.data() + offsets_[i], buf.data() + offsets_[i + 1]);
}

template <class F>
std::span<F> Gpt<F>::param(Param p) {
  return Slice(params_, p);
}

template <class F>
std::span<F> Gpt<F>::grad(Param p) {
  return Slice(grads_, p);
}

template <class F>
void Gpt<F>::Allocate(int B, int T) {
  if (B <= alloc_B_ && T == alloc_T_) return;
  Acts a(config_, B, T);
  acts_.assign(static_cast<size_t>(a.total), F(0));
  dacts_.assign(static_cast<size_t>(a.total), F(0));
  alloc_B_ = B;
  alloc_T_ = T;
}

template <class F>
StatusOr<F> Gpt<F>::Forward(const int32_t* inputs, const int32_t* targets, int B, int T) {
  const GptConfig& c = config_;
  KILN_RETURN_IF_ERROR(c.CheckBatch(inputs, targets, B, T));
  const int64_t BT = static_cast<int64_t>(B) * T;
  Allocate(B, T);
  B_ = B;
  T_ = T;
  inputs_.assign(inputs, inputs + BT);
  have_targets_ = targets != nullptr;
  if (have_targets_) targets_.assign(targets, targets + BT);

  // Offsets for this B (the buffer may be larger).
  Acts a(c, B, T);
  F* A = acts_.data();
  const int C = c.channels, L = c.num_layers, NH = c.num_heads, Vp = c.padded_vocab_size;
  const int N = static_cast<int>(BT);
  auto P = [this](Param p) { return param(p).data(); };

  cpu::EncoderForward(A + a.encoded, inputs_.data(), P(Param::kWte), P(Param::kWpe), B, T, C);
  for (int l = 0; l < L; ++l) {
    const int64_t lC = static_cast<int64_t>(l) * C, lBTC = l * BT * C;
    const F* residual = l == 0 ? A + a.encoded : A + a.residual3 + (l - 1) * BT * C;
    F* ln1 = A + a.ln1 + lBTC;
    F* qkv = A + a.qkv + l * BT * 3 * C;
    F* atty = A + a.atty + lBTC;
    F* preatt = A + a.preatt + static_cast<int64_t>(l) * B * NH * T * T;
    F* att = A + a.att + static_cast<int64_t>(l) * B * NH * T * T;
    F* attproj = A + a.attproj + lBTC;
    F* residual2 = A + a.residual2 + lBTC;
    F* ln2 = A + a.ln2 + lBTC;
    F* fch = A + a.fch + l * BT * 4 * C;
    F* fch_gelu = A + a.fch_gelu + l * BT * 4 * C;
    F* fcproj = A + a.fcproj + lBTC;
    F* residual3 = A + a.residual3 + lBTC;
    cpu::LayerNormForward(ln1, A + a.ln1_mean + l * BT, A + a.ln1_rstd + l * BT, residual,
                          P(Param::kLn1W) + lC, P(Param::kLn1B) + lC, N, C);
    cpu::MatmulForward(qkv, ln1, P(Param::kQkvW) + lC * 3 * C, P(Param::kQkvB) + lC * 3, N, C,
                       3 * C);
    cpu::AttentionForward(atty, preatt, att, qkv, B, T, C, NH);
    cpu::MatmulForward(attproj, atty, P(Param::kAttProjW) + lC * C, P(Param::kAttProjB) + lC, N, C,
                       C);
    cpu::ResidualForward(residual2, residual, attproj, BT * C);
    cpu::LayerNormForward(ln2, A + a.ln2_mean + l * BT, A + a.ln2_rstd + l * BT, residual2,
                          P(Param::kLn2W) + lC, P(Param::kLn2B) + lC, N, C);
    cpu::MatmulForward(fch, ln2, P(Param::kFcW) + lC * 4 * C, P(Param::kFcB) + lC * 4, N, C, 4 * C);
    cpu::GeluForward(fch_gelu, fch, BT * 4 * C);
    cpu::MatmulForward(fcproj, fch_gelu, P(Param::kFcProjW) + lC * 4 * C, P(Param::kFcProjB) + lC,
                       N, 4 * C, C);
    cpu::ResidualForward(residual3, residual2, fcproj, BT * C);
  }
  const F* last = A + a.residual3 + (L - 1) * BT * C;
  cpu::LayerNormForward(A + a.lnf, A + a.lnf_mean, A + a.lnf_rstd, last, P(Param::kLnfW),
                        P(Param::kLnfB), N, C);
  cpu::MatmulForward(A + a.logits, A + a.lnf, P(Param::kWte), static_cast<const F*>(nullptr), N, C,
                     Vp);
  logits_view_ = std::span<const F>(A + a.logits, static_cast<size_t>(BT * Vp));
  if (!have_targets_) return F(0);
  cpu::SoftmaxCrossEntropyForward(A + a.losses, A + a.probs, A + a.logits, targets_.data(), N,
                                  c.vocab_size, Vp);
  F mean = 0;
  for (int64_t i = 0; i < BT; ++i) mean += A[a.losses + i];
  return mean / static_cast<F>(BT);
}

template <class F>
void Gpt<F>::ZeroGrad() {
  std::fill(grads_.begin(), grads_.end(), F(0));
}

template <class F>
Status Gpt<F>::Backward(F loss_scale) {
  if (!have_targets_) return Status::FailedPrecondition("Backward needs a Forward with targets");
  const GptConfig& c = config_;
  const int B = B_, T = T_, C = c.channels, L = c.num_layers, NH = c.num_heads;
  const int Vp = c.padded_vocab_size;
  const int64_t BT = static_cast<int64_t>(B) * T;
  const int N = static_cast<int>(BT);
  Acts a(c, B, T);
  F* A = acts_.data();
  F* D = dacts_.data();
  std::fill(dacts_.begin(), dacts_.begin() + a.total, F(0));
  auto P = [this](Param p) { return param(p).data(); };
  auto G = [this](Param p) { return grad(p).data(); };

  for (int64_t i = 0; i < BT; ++i) D[a.losses + i] = loss_scale / static_cast<F>(BT);
  cpu::SoftmaxCrossEntropyBackward(D + a.logits, D + a.losses, A + a.probs, targets_.data(), N,
                                   c.vocab_size, Vp);
  cpu::MatmulBackward(D + a.lnf, G(Param::kWte), static_cast<F*>(nullptr), D + a.logits, A + a.lnf,
                      P(Param::kWte), N, C, Vp);
  F* dlast = D + a.residual3 + (L - 1) * BT * C;
  cpu::LayerNormBackward(dlast, G(Param::kLnfW), G(Param::kLnfB), D + a.lnf,
                         A + a.residual3 + (L - 1) * BT * C, P(Param::kLnfW), A + a.lnf_mean,
                         A + a.lnf_rstd, N, C);
  for (int l = L - 1; l >= 0; --l) {
    const int64_t lC = static_cast<int64_t>(l) * C, lBTC = l * BT * C;
    const F* residual = l == 0 ? A + a.encoded : A + a.residual3 + (l - 1) * BT * C;
    F* dresidual = l == 0 ? D + a.encoded : D + a.residual3 + (l - 1) * BT * C;
    const int64_t att_off = static_cast<int64_t>(l) * B * NH * T * T;
    // residual3 = residual2 + fcproj
    cpu::ResidualBackward(D + a.residual2 + lBTC, D + a.fcproj + lBTC, D + a.residual3 + lBTC,
                          BT * C);
    cpu::MatmulBackward(D + a.fch_gelu + l * BT * 4 * C, G(Param::kFcProjW) + lC * 4 * C,
                        G(Param::kFcProjB) + lC, D + a.fcproj + lBTC,
                        A + a.fch_gelu + l * BT * 4 * C, P(Param::kFcProjW) + lC * 4 * C, N, 4 * C,
                        C);
    cpu::GeluBackward(D + a.fch + l * BT * 4 * C, A + a.fch + l * BT * 4 * C,
                      D + a.fch_gelu + l * BT * 4 * C, BT * 4 * C);
    cpu::MatmulBackward(D + a.ln2 + lBTC, G(Param::kFcW) + lC * 4 * C, G(Param::kFcB) + lC * 4,
                        D + a.fch + l * BT * 4 * C, A + a.ln2 + lBTC, P(Param::kFcW) + lC * 4 * C,
                        N, C, 4 * C);
    cpu::LayerNormBackward(D + a.residual2 + lBTC, G(Param::kLn2W) + lC, G(Param::kLn2B) + lC,
                           D + a.ln2 + lBTC, A + a.residual2 + lBTC, P(Param::kLn2W) + lC,
                           A + a.ln2_mean + l * BT, A + a.ln2_rstd + l * BT, N, C);
    // residual2 = residual + attproj
    cpu::ResidualBackward(dresidual, D + a.attproj + lBTC, D + a.residual2 + lBTC, BT * C);
    cpu::MatmulBackward(D + a.atty + lBTC, G(Param::kAttProjW) + lC * C, G(Param::kAttProjB) + lC,
                        D + a.attproj + lBTC, A + a.atty + lBTC, P(Param::kAttProjW) + lC * C, N, C,
                        C);
    cpu::AttentionBackward(D + a.qkv + l * BT * 3 * C, D + a.preatt + att_off, D + a.att + att_off,
                           D + a.atty + lBTC, A + a.qkv + l * BT * 3 * C, A + a.att + att_off, B, T,
                           C, NH);
    cpu::MatmulBackward(D + a.ln1 + lBTC, G(Param::kQkvW) + lC * 3 * C, G(Param::kQkvB) + lC * 3,
                        D + a.qkv + l * BT * 3 * C, A + a.ln1 + lBTC, P(Param::kQkvW) + lC * 3 * C,
                        N, C, 3 * C);
    cpu::LayerNormBackward(dresidual, G(Param::kLn1W) + lC, G(Param::kLn1B) + lC, D + a.ln1 + lBTC,
                           residual, P(Param::kLn1W) + lC, A + a.ln1_mean + l * BT,
                           A + a.ln1_rstd + l * BT, N, C);
  }
  cpu::EncoderBackward(G(Param::kWte), G(Param::kWpe), D + a.encoded, inputs_.data(), B, T, C);
  return Status::Ok();
}

template <class F>
void Gpt<F>::Update(const cpu::AdamWParams& adam) {
  // Decay only matrices (embeddings and weights), as GPT-2 training does.
  cpu::AdamWParams no_decay = adam;
  no_decay.weight_decay = 0;
  for (int i = 0; i < static_cast<int>(Param::kCount); ++i) {
    const int64_t begin = offsets_[i], n = offsets_[i + 1] - offsets_[i];
    cpu::AdamW(params_.data() + begin, grads_.data() + begin, m_.data() + begin, v_.data() + begin,
               n, decay_[i] ? adam : no_decay);
  }
}

template class Gpt<float>;
template class Gpt<double>;

}  // namespace kiln::model
