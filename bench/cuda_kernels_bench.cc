// Microbenchmark of kiln's CUDA kernels (kernels/cuda) at the GPT-2 124M
// shape: for each kernel the mean time per call over 20 calls after 3
// warm-up calls (CUDA events on one stream), and what it achieves: GB/s (the
// bytes each kernel must move at least, read once and written once, over the
// time) against the device's peak bandwidth for the memory-bound kernels,
// TFLOP/s for the GEMMs. Without a GPU it says so and exits 0.
// Usage: cuda_kernels_bench [B] [T]   (default B=8 T=1024; C=768, NH=12,
// V=50257, Vp=50304 and 124,475,904 parameters for AdamW and the norm).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/cuda_bench.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/classifier.h"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/global_norm.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"

namespace {

namespace k = kiln::kernels::cuda;
using k::bf16;
using kiln::bench::Arena;
using kiln::bench::Bench;
using kiln::bench::kIters;
using kiln::bench::kWarmup;

}  // namespace

int main(int argc, char** argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 8;
  const int T = argc > 2 ? std::atoi(argv[2]) : 1024;
  if (B <= 0 || T <= 0) {
    std::fprintf(stderr, "usage: %s [B] [T]\n", argv[0]);
    return 2;
  }
  const std::string no_device = kiln::bench::NoDevice();
  if (!no_device.empty()) {
    std::printf("cuda_kernels_bench: no CUDA device (%s); nothing to measure\n", no_device.c_str());
    return 0;
  }
  constexpr int C = 768, NH = 12, L = 12, V = 50257, Vp = 50304, kMaxT = 1024;
  const int N = B * T;
  const int64_t NC = int64_t{N} * C;
  const int64_t params =
      int64_t{Vp} * C + int64_t{kMaxT} * C + L * (12LL * C * C + 13LL * C) + 2 * C;

  // The same sizes as doubles, for the byte and FLOP counts.
  const double dN = N, dT = T, dC = C, dNC = static_cast<double>(NC), dVp = Vp;
  const double dparams = static_cast<double>(params);

  const double peak_gbs = kiln::bench::OpenDevice("cuda_kernels_bench", argc, argv);
  if (peak_gbs < 0) return 1;
  std::printf(
      "shape: B=%d T=%d C=%d NH=%d V=%d Vp=%d, %lld parameters; mean of %d calls after %d "
      "warm-up\n",
      B, T, C, NH, V, Vp, static_cast<long long>(params), kIters, kWarmup);

  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) return 1;
  auto blas = k::Blas::Create();
  if (!blas.ok()) {
    std::printf("Blas::Create: %s\n", blas.status().ToString().c_str());
    return 1;
  }
  Arena arena;
  Bench bench(stream, peak_gbs);

  std::mt19937 rng(1);
  std::vector<int32_t> tokens(static_cast<std::size_t>(N));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % V);
  const auto unique_tokens =
      static_cast<double>(std::set<int32_t>(tokens.begin(), tokens.end()).size());
  auto* inp = arena.Take<int32_t>(N);
  cudaMemcpy(inp, tokens.data(), tokens.size() * sizeof(int32_t), cudaMemcpyHostToDevice);
  auto* targets = arena.Take<int32_t>(N);
  cudaMemcpy(targets, tokens.data(), tokens.size() * sizeof(int32_t), cudaMemcpyHostToDevice);

  // Encoder.
  auto* wte = arena.Take<bf16>(int64_t{Vp} * C);
  auto* wpe = arena.Take<bf16>(int64_t{kMaxT} * C);
  auto* dwte = arena.Take<float>(int64_t{Vp} * C);
  auto* dwpe = arena.Take<float>(int64_t{kMaxT} * C);
  auto* x = arena.Take<bf16>(NC);
  auto* y = arena.Take<bf16>(NC);
  auto* z = arena.Take<bf16>(NC);
  bench.Bandwidth("encoder_forward", 2 * dNC * 2 + dT * dC * 2 + dN * 4,
                  [&] { return k::EncoderForward(x, inp, wte, wpe, B, T, C, stream); });
  auto scratch_bytes = k::EncoderBackwardScratchBytes(B, T);
  if (!scratch_bytes.ok()) {
    std::printf("EncoderBackwardScratchBytes: %s\n", scratch_bytes.status().ToString().c_str());
    return 1;
  }
  auto* encoder_scratch = arena.Take<char>(static_cast<int64_t>(*scratch_bytes));
  bench.Bandwidth("encoder_backward", dNC * 2 + unique_tokens * dC * 8 + dT * dC * 8 + dN * 4, [&] {
    return k::EncoderBackward(dwte, dwpe, x, inp, B, T, C, encoder_scratch, *scratch_bytes, stream);
  });

  // LayerNorm.
  auto* ln_w = arena.Take<bf16>(C);
  auto* ln_b = arena.Take<bf16>(C);
  auto* dln_w = arena.Take<float>(C);
  auto* dln_b = arena.Take<float>(C);
  auto* mean = arena.Take<float>(N);
  auto* rstd = arena.Take<float>(N);
  auto* ln_scratch =
      arena.Take<float>(static_cast<int64_t>(k::LayerNormBackwardScratchFloats(N, C)));
  bench.Bandwidth("layernorm_forward", 2 * dNC * 2 + 8 * dN,
                  [&] { return k::LayerNormForward(y, mean, rstd, x, ln_w, ln_b, N, C, stream); });
  bench.Bandwidth("residual_layernorm_forward", 4 * dNC * 2 + 8 * dN, [&] {
    return k::ResidualLayerNormForward(z, y, mean, rstd, x, z, ln_w, ln_b, N, C, stream);
  });
  bench.Bandwidth("layernorm_backward", 4 * dNC * 2 + 8 * dN, [&] {
    return k::LayerNormBackward(z, dln_w, dln_b, y, x, ln_w, mean, rstd, N, C, ln_scratch, stream);
  });

  // The linear layers of one block and the head.
  struct Linear {
    const char* name;
    int in, out;
    bool bias;
  };
  const Linear linears[] = {{"qkv", C, 3 * C, true},
                            {"attproj", C, C, true},
                            {"fc", C, 4 * C, true},
                            {"fcproj", 4 * C, C, true},
                            {"lm_head", C, Vp, false}};
  auto* act_in = arena.Take<bf16>(int64_t{N} * 4 * C);
  auto* dact_in = arena.Take<bf16>(int64_t{N} * 4 * C);
  auto* act_out = arena.Take<bf16>(int64_t{N} * Vp);
  auto* weight = arena.Take<bf16>(int64_t{Vp} * C);
  auto* dweight = arena.Take<float>(int64_t{Vp} * C);
  auto* bias = arena.Take<bf16>(Vp);
  auto* dbias = arena.Take<float>(Vp);
  auto* mm_scratch = arena.Take<float>(static_cast<int64_t>(k::MatmulBackwardScratchFloats(N, Vp)));
  for (const Linear& l : linears) {
    const double flops = 2 * dN * l.in * l.out;
    const std::string suffix =
        std::string(" ") + l.name + " " + std::to_string(l.in) + "->" + std::to_string(l.out);
    bench.Flops("matmul_forward" + suffix, flops, [&] {
      return k::MatmulForward(*blas, act_out, act_in, weight, l.bias ? bias : nullptr, N, l.in,
                              l.out, stream);
    });
    bench.Flops("matmul_backward" + suffix, 2 * flops, [&] {
      return k::MatmulBackward(*blas, dact_in, dweight, l.bias ? dbias : nullptr, act_out, act_in,
                               weight, N, l.in, l.out, mm_scratch, stream);
    });
  }

  // The MLP's GELU fused into its GEMMs (what the model runs): the fc layer
  // with the GELU in its epilogue, and fcproj's backward writing dinp through
  // the GELU derivative (compare with matmul + gelu rows above and below).
  {
    const double flops = 2 * dN * C * 4 * C;
    auto* pre = arena.Take<bf16>(int64_t{N} * 4 * C);
    bench.Flops("matmul_gelu_forward fc " + std::to_string(C) + "->" + std::to_string(4 * C), flops,
                [&] {
                  return k::MatmulGeluForward(*blas, act_out, pre, act_in, weight, bias, N, C,
                                              4 * C, stream);
                });
    bench.Flops("matmul_backward+dgelu fcproj " + std::to_string(4 * C) + "->" + std::to_string(C),
                2 * flops, [&] {
                  return k::MatmulBackward(*blas, dact_in, dweight, dbias, act_out, act_in, weight,
                                           N, 4 * C, C, mm_scratch, stream,
                                           {.overwrite_dinp = true, .gelu_input = pre});
                });
  }

  // Attention (FLOPs of the full T x T GEMMs the cuBLAS path computes).
  const int hs = C / NH;
  const double att_flops = 4 * dN * NH * dT * hs;
  auto* qkv = arena.Take<bf16>(3 * NC);
  auto* dqkv = arena.Take<bf16>(3 * NC);
  auto* att = arena.Take<bf16>(int64_t{B} * NH * T * T);
  const std::size_t att_scratch_bytes = k::AttentionScratchBytes(B, T, C, NH);
  auto* att_scratch = arena.Take<char>(static_cast<int64_t>(att_scratch_bytes));
  bench.Flops("attention_forward", att_flops, [&] {
    return k::AttentionForward(*blas, y, att, qkv, B, T, C, NH, att_scratch, att_scratch_bytes,
                               stream);
  });
  bench.Flops("attention_backward", 2 * att_flops, [&] {
    return k::AttentionBackward(*blas, dqkv, y, qkv, att, B, T, C, NH, att_scratch,
                                att_scratch_bytes, stream);
  });
  if (k::FlashAttentionSupported(hs)) {
    // The fused kernels, counted with the same FLOPs (they skip the masked
    // upper half, so their true rate is about half the figure's).
    auto* lse = arena.Take<float>(int64_t{B} * NH * T);
    const std::size_t flash_bytes = k::FlashAttentionBackwardScratchBytes(B, T, NH);
    auto* flash_scratch = arena.Take<char>(static_cast<int64_t>(flash_bytes));
    bench.Flops("flash_attention_forward", att_flops,
                [&] { return k::FlashAttentionForward(y, lse, qkv, B, T, C, NH, stream); });
    bench.Flops("flash_attention_backward", 2 * att_flops, [&] {
      return k::FlashAttentionBackward(dqkv, y, qkv, y, lse, B, T, C, NH, flash_scratch,
                                       flash_bytes, stream);
    });
  }

  // GELU over the 4C-wide MLP activations.
  const int64_t n_gelu = 4 * NC;
  bench.Bandwidth("gelu_forward", 2 * 4 * dNC * 2,
                  [&] { return k::GeluForward(act_out, act_in, n_gelu, stream); });
  bench.Bandwidth("gelu_backward", 4 * 4 * dNC * 2,
                  [&] { return k::GeluBackward(dact_in, act_in, act_out, n_gelu, stream); });

  // The classifier, in place over the logits as the model will run it.
  auto* losses = arena.Take<float>(N);
  bench.Bandwidth("fused_classifier", 2 * dN * dVp * 2 + 8 * dN, [&] {
    return k::FusedClassifier(act_out, losses, act_out, targets, 1.0f / static_cast<float>(N), N, V,
                              Vp, stream);
  });

  // The optimizer step and the gradient norm over every parameter.
  auto* master = arena.Take<float>(params);
  auto* grads = arena.Take<float>(params);
  auto* m = arena.Take<float>(params);
  auto* v = arena.Take<float>(params);
  auto* copy = arena.Take<bf16>(params);
  auto* norm = arena.Take<float>(1);
  auto* norm_scratch = arena.Take<float>(static_cast<int64_t>(k::GlobalNormScratchFloats()));
  const kiln::kernels::cpu::AdamWParams adam{.weight_decay = 0.1f, .step = 10};
  bench.Bandwidth("adamw", 30 * dparams,
                  [&] { return k::AdamW(master, copy, grads, m, v, params, adam, 1.0f, stream); });
  bench.Bandwidth("global_norm", 4 * dparams,
                  [&] { return k::GlobalNorm(norm, grads, params, norm_scratch, stream); });

  cudaStreamDestroy(stream);
  return bench.failed() ? 1 : 0;
}
