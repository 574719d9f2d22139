// Single-stream CPU decode benchmark of kiln's serving path: a random GPT of
// the given shape generates greedily from a short prompt, once through the
// Decoder directly (the purest single-stream figure) and once through the
// continuous-batching Engine with one request. Reports the decode phase only
// (the prompt's prefill, which also yields the first token, is timed apart),
// as llama2.c's run.c does, then a rough breakdown of where a decode step's
// time goes. bench/llama2c_compare.sh runs it beside run.c.
//
// Usage: decode_bench [L H C CONTEXT VOCAB [TOKENS [PROMPT]]]
//   defaults 6 6 288 256 32000 0 1: llama2.c's stories15M shape; TOKENS 0
//   fills the context (the decoder generates CONTEXT - PROMPT + 1 tokens, the
//   engine one fewer, as it stops when the sequence reaches the context).
// Threads: OMP_NUM_THREADS (default: all cores).
#include <omp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/cpu/ops.h"
#include "worker/model/gpt.h"
#include "worker/serve/decoder.h"
#if KILN_BENCH_CUDA
#include <cuda_runtime.h>

#include "worker/serve/cuda_decoder.h"
#endif
#include "worker/serve/engine.h"
#include "worker/serve/kv_cache.h"
#include "worker/serve/sampler.h"

namespace {

using kiln::model::GptConfig;
using kiln::model::Param;
using Clock = std::chrono::steady_clock;
namespace cpu = kiln::kernels::cpu;
namespace serve = kiln::serve;

constexpr uint64_t kModelSeed = 1337;
constexpr int kBlockSize = 16;  // The engine's default KV-cache block.
// Repetitions in the breakdown: enough to average out timer noise.
constexpr int kBreakdownReps = 64;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown CPU";
}

struct Args {
  int layers = 6, heads = 6, channels = 288, context = 256, vocab = 32000;
  int tokens = 0;  // 0: fill the context.
  int prompt = 1;
};

bool ParseArgs(int argc, char** argv, Args& a) {
  int* fields[] = {&a.layers, &a.heads, &a.channels, &a.context, &a.vocab, &a.tokens, &a.prompt};
  const char* names[] = {"L", "H", "C", "CONTEXT", "VOCAB", "TOKENS", "PROMPT"};
  if (argc - 1 > static_cast<int>(std::size(fields))) {
    std::fprintf(stderr, "too many arguments\n");
    return false;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view s(argv[i]);
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    const bool may_be_zero = i == 6;  // TOKENS.
    if (ec != std::errc() || end != s.data() + s.size() || v < (may_be_zero ? 0 : 1)) {
      std::fprintf(stderr, "%s must be a %s whole number, got '%s'\n", names[i - 1],
                   may_be_zero ? "non-negative" : "positive", argv[i]);
      return false;
    }
    *fields[i - 1] = v;
  }
  if (a.prompt > a.context - 2) {
    std::fprintf(stderr, "PROMPT (%d) must leave at least 2 positions of the context (%d)\n",
                 a.prompt, a.context);
    return false;
  }
  const int most = a.context - a.prompt + 1;
  if (a.tokens == 0) a.tokens = most;
  if (a.tokens < 2 || a.tokens > most) {
    std::fprintf(stderr,
                 "TOKENS must be in [2, %d]: the first comes from the prefill, and the last "
                 "must be sampled at a position inside the context\n",
                 most);
    return false;
  }
  return true;
}

// One generation's figures. Decode steps run at positions
// [first_pos, first_pos + decoded).
struct Run {
  std::vector<int32_t> tokens;  // Generated, the prefill's first.
  double prefill_ms = 0;
  double decode_ms = 0;
  int decoded = 0;    // Decode steps (generated tokens - 1).
  int first_pos = 0;  // Position of the first decode step.
};

// Which decoder a run uses.
enum class Device { kCpuFloat, kCpuBf16, kCuda };

kiln::StatusOr<Run> RunDecoder(kiln::model::Gpt<float>& model, const std::vector<int32_t>& prompt,
                               int tokens, Device device = Device::kCpuFloat) {
  const GptConfig& c = model.config();
  const int num_blocks = (c.max_seq_len + kBlockSize - 1) / kBlockSize;
  serve::PagedKvCache cache(c.num_layers, c.channels, kBlockSize, num_blocks,
                            /*host_storage=*/device != Device::kCuda);
  KILN_ASSIGN_OR_RETURN(std::vector<int> blocks, cache.Allocate(cache.num_blocks()));
  std::unique_ptr<serve::Decoder> owned;
  if (device == Device::kCuda) {
#if KILN_BENCH_CUDA
    KILN_ASSIGN_OR_RETURN(owned, serve::NewCudaDecoder(model, kBlockSize, num_blocks, 0));
#else
    return kiln::Status::FailedPrecondition("built without CUDA");
#endif
  } else {
    owned = std::make_unique<serve::CpuDecoder>(
        model, cache,
        device == Device::kCpuBf16 ? serve::CpuWeights::kBf16 : serve::CpuWeights::kFloat);
  }
  serve::Decoder& decoder = *owned;
  const serve::SamplingParams greedy{.temperature = 0};
  serve::Rng rng(0);
  std::vector<float> logits;
  auto next = [&]() {
    return serve::Sample(std::span<const float>(logits.data(), static_cast<size_t>(c.vocab_size)),
                         greedy, rng);
  };
  Run run;
  const int P = static_cast<int>(prompt.size());
  const auto t0 = Clock::now();
  const serve::SequenceSlice prefill{.tokens = prompt, .start = 0, .blocks = &blocks};
  KILN_RETURN_IF_ERROR(decoder.Forward({&prefill, 1}, logits));
  run.tokens.push_back(next());
  const auto t1 = Clock::now();
  run.prefill_ms = Ms(t1 - t0);
  run.first_pos = P;
  for (int k = 1; k < tokens; ++k) {
    const serve::SequenceSlice step{
        .tokens = {&run.tokens.back(), 1}, .start = P + k - 1, .blocks = &blocks};
    KILN_RETURN_IF_ERROR(decoder.Forward({&step, 1}, logits));
    run.tokens.push_back(next());
  }
  run.decode_ms = Ms(Clock::now() - t1);
  run.decoded = tokens - 1;
  return run;
}

kiln::StatusOr<Run> RunEngine(kiln::model::Gpt<float>& model, const std::vector<int32_t>& prompt,
                              int tokens) {
  serve::EngineOptions o;
  o.max_running = 1;
  o.max_queue = 1;
  o.block_size = kBlockSize;
  o.end_of_text = -1;  // Random weights: every token id is just a token.
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<serve::Engine> engine, serve::Engine::Create(model, o));
  serve::GenerateRequest req;
  req.prompt = prompt;
  req.max_tokens = tokens;
  req.sampling.temperature = 0;
  Run run;
  Clock::time_point first, last;
  serve::FinishReason finish = serve::FinishReason::kNone;
  auto on_token = [&](const serve::TokenEvent& e) {
    if (e.token) {
      run.tokens.push_back(*e.token);
      last = Clock::now();
      if (run.tokens.size() == 1) first = last;
    }
    finish = e.finish;
  };
  KILN_RETURN_IF_ERROR(engine->Submit(std::move(req), on_token).status());
  const auto t0 = Clock::now();
  while (finish == serve::FinishReason::kNone) {
    KILN_ASSIGN_OR_RETURN(bool worked, engine->Step());
    if (!worked) return kiln::Status::Internal("the engine stopped before the request finished");
  }
  if (finish != serve::FinishReason::kLength) {
    return kiln::Status::Internal(std::string("the request finished with '") +
                                  serve::FinishReasonName(finish) + "', expected 'length'");
  }
  run.prefill_ms = Ms(first - t0);
  run.decode_ms = Ms(last - first);
  run.decoded = static_cast<int>(run.tokens.size()) - 1;
  run.first_pos = static_cast<int>(prompt.size());
  return run;
}

// FLOPs of a decode step: 2 per weight of every matmul (the blocks' 12 C^2
// and the tied classifier's Vp x C), plus attention's q.k and weights.v over
// the attended positions (a step at position p attends p + 1), 4 C per
// position and layer. LayerNorm, GELU, biases and residuals add under 1%; not
// counted.
double MatmulWeights(const GptConfig& c) {
  const double C = c.channels;
  return c.num_layers * 12 * C * C + static_cast<double>(c.padded_vocab_size) * C;
}
double AttentionFlops(const GptConfig& c, double attended) {
  return 4.0 * c.num_layers * c.channels * attended;
}
// Mean positions attended over a run's decode steps.
double MeanAttended(const Run& r) { return r.first_pos + 1 + (r.decoded - 1) / 2.0; }

// Where a decode step's time goes. The decoder has no timers inside, so this
// replays its sequence of kernels (kernels/cpu/ops.h, in the order of
// worker/serve/decoder.cc) for one token on the model's own weights, timing
// each phase, with every layer's weights streaming through as in a real step;
// attention over the cache and the KV-cache writes are left out. Each
// repetition also times real decoder steps at the run's first, middle and
// last decode positions, so that the replay and the steps it is set against
// share one window of machine load: the middle step minus the replay is
// attention, the KV writes and the decoder's own overhead at the mean
// position, and the last step minus the first gives attention's cost per
// attended position.
kiln::Status PrintBreakdown(kiln::model::Gpt<float>& model, const std::vector<int32_t>& prompt,
                            const Run& dec) {
  const GptConfig& c = model.config();
  const int C = c.channels, L = c.num_layers, Vp = c.padded_vocab_size;
  const serve::SamplingParams greedy{.temperature = 0};
  serve::Rng rng(0);
  auto sample = [&](const std::vector<float>& logits) {
    return serve::Sample(std::span<const float>(logits.data(), static_cast<size_t>(c.vocab_size)),
                         greedy, rng);
  };

  // A cache holding the run's sequence (prompt, then the tokens fed back) up
  // to its last decode position; the token fed at position p >= first_pos is
  // tokens[p - first_pos].
  const int pos[3] = {dec.first_pos, dec.first_pos + (dec.decoded - 1) / 2,
                      dec.first_pos + dec.decoded - 1};
  serve::PagedKvCache cache(c.num_layers, c.channels, kBlockSize,
                            (c.max_seq_len + kBlockSize - 1) / kBlockSize);
  KILN_ASSIGN_OR_RETURN(std::vector<int> blocks, cache.Allocate(cache.num_blocks()));
  serve::CpuDecoder decoder(model, cache);
  std::vector<float> step_logits;
  std::vector<int32_t> history = prompt;
  history.insert(history.end(), dec.tokens.begin(), dec.tokens.begin() + (pos[2] - dec.first_pos));
  const serve::SequenceSlice fill{.tokens = history, .start = 0, .blocks = &blocks};
  KILN_RETURN_IF_ERROR(decoder.Forward({&fill, 1}, step_logits));
  double step_ms[3] = {};

  auto P = [&](Param p) { return model.param(p).data(); };
  enum Phase {
    kEmbed,
    kLayerNorm,
    kQkv,
    kAttProj,
    kFc,
    kGelu,
    kFcProj,
    kResidual,
    kLogits,
    kSample,
    kPhases
  };
  const char* names[kPhases] = {
      "embedding (token + position rows)", "layernorm (2L + 1)",
      "qkv matmul        [L, 3C, C]",      "attn proj matmul  [L, C, C]",
      "fc matmul         [L, 4C, C]",      "gelu              (L x 4C)",
      "fc proj matmul    [L, C, 4C]",      "residual adds     (2L)",
      "logits matmul     [Vp, C]",         "greedy sample     (argmax over V)"};
  const double Cd = C;
  const double weight_mb[kPhases] = {0,
                                     0,
                                     L * 3 * Cd * Cd * 4 / 1e6,
                                     L * Cd * Cd * 4 / 1e6,
                                     L * 4 * Cd * Cd * 4 / 1e6,
                                     0,
                                     L * 4 * Cd * Cd * 4 / 1e6,
                                     0,
                                     static_cast<double>(Vp) * Cd * 4 / 1e6,
                                     0};
  double ms[kPhases] = {};
  std::vector<float> x(static_cast<size_t>(C)), ln(x.size()), proj(x.size()), qkv(3 * x.size()),
      fch(4 * x.size()), fcg(4 * x.size()), logits(static_cast<size_t>(Vp));
  float mean = 0, rstd = 0;
  for (int rep = 0; rep < kBreakdownReps; ++rep) {
    for (int i = 0; i < 3; ++i) {
      // Rewrites the cache at pos[i] with the key and value the run wrote there.
      const serve::SequenceSlice step{
          .tokens = {&dec.tokens[static_cast<size_t>(pos[i] - dec.first_pos)], 1},
          .start = pos[i],
          .blocks = &blocks};
      const auto t0 = Clock::now();
      KILN_RETURN_IF_ERROR(decoder.Forward({&step, 1}, step_logits));
      (void)sample(step_logits);
      step_ms[i] += Ms(Clock::now() - t0);
    }
    auto t = Clock::now();
    auto lap = [&](Phase p) {
      const auto now = Clock::now();
      ms[p] += Ms(now - t);
      t = now;
    };
    const float* te = P(Param::kWte) + static_cast<int64_t>(dec.tokens[0]) * C;
    const float* pe = P(Param::kWpe) + static_cast<int64_t>(dec.first_pos) * C;
    for (int i = 0; i < C; ++i) x[static_cast<size_t>(i)] = te[i] + pe[i];
    lap(kEmbed);
    for (int l = 0; l < L; ++l) {
      const int64_t lC = static_cast<int64_t>(l) * C;
      cpu::LayerNormForward(ln.data(), &mean, &rstd, x.data(), P(Param::kLn1W) + lC,
                            P(Param::kLn1B) + lC, 1, C);
      lap(kLayerNorm);
      cpu::MatmulForward(qkv.data(), ln.data(), P(Param::kQkvW) + lC * 3 * C,
                         P(Param::kQkvB) + lC * 3, 1, C, 3 * C);
      lap(kQkv);
      // The LayerNorm output stands in for attention's (the values do not
      // change the cost).
      cpu::MatmulForward(proj.data(), ln.data(), P(Param::kAttProjW) + lC * C,
                         P(Param::kAttProjB) + lC, 1, C, C);
      lap(kAttProj);
      cpu::ResidualForward(x.data(), x.data(), proj.data(), C);
      lap(kResidual);
      cpu::LayerNormForward(ln.data(), &mean, &rstd, x.data(), P(Param::kLn2W) + lC,
                            P(Param::kLn2B) + lC, 1, C);
      lap(kLayerNorm);
      cpu::MatmulForward(fch.data(), ln.data(), P(Param::kFcW) + lC * 4 * C,
                         P(Param::kFcB) + lC * 4, 1, C, 4 * C);
      lap(kFc);
      cpu::GeluForward(fcg.data(), fch.data(), 4 * static_cast<int64_t>(C));
      lap(kGelu);
      cpu::MatmulForward(proj.data(), fcg.data(), P(Param::kFcProjW) + lC * 4 * C,
                         P(Param::kFcProjB) + lC, 1, 4 * C, C);
      lap(kFcProj);
      cpu::ResidualForward(x.data(), x.data(), proj.data(), C);
      lap(kResidual);
    }
    cpu::LayerNormForward(ln.data(), &mean, &rstd, x.data(), P(Param::kLnfW), P(Param::kLnfB), 1,
                          C);
    lap(kLayerNorm);
    cpu::MatmulForward(logits.data(), ln.data(), P(Param::kWte), static_cast<const float*>(nullptr),
                       1, C, Vp);
    lap(kLogits);
    (void)sample(logits);
    lap(kSample);
  }
  double replayed = 0;
  for (double& m : ms) replayed += m /= kBreakdownReps;
  for (double& m : step_ms) m /= kBreakdownReps;
  const double mid = step_ms[1];

  std::printf(
      "\n# where a decoder step's time goes: %d repetitions of real decoder steps at positions "
      "%d, %d, %d, each beside a replay of the decoder's kernels for one token (attention "
      "excluded); shares are of the step at position %d, the run's mean\n",
      kBreakdownReps, pos[0], pos[1], pos[2], pos[1]);
  std::printf("%-40s %9s %7s %10s %8s\n", "phase", "ms/token", "share", "weight MB", "GB/s");
  for (int p = 0; p < kPhases; ++p) {
    char gbs[32] = "";
    if (weight_mb[p] > 0) std::snprintf(gbs, sizeof(gbs), "%.1f", weight_mb[p] / ms[p]);
    std::printf("%-40s %9.4f %6.1f%% %10.2f %8s\n", names[p], ms[p], 100 * ms[p] / mid,
                weight_mb[p], gbs);
  }
  std::printf("%-40s %9.4f %6.1f%%\n", "attention + KV writes + decoder overhead", mid - replayed,
              100 * (mid - replayed) / mid);
  std::printf("%-40s %9.4f %6.1f%%\n", "decoder step (measured)", mid, 100.0);
  const double per_position = (step_ms[2] - step_ms[0]) / std::max(1, pos[2] - pos[0]);
  std::printf(
      "# decoder step at position %d: %.4f ms, at %d: %.4f ms, at %d: %.4f ms; attention costs "
      "about %.2f us per attended position (%.4f ms at position %d); what is left at position %d "
      "besides the replay, %.4f ms, is the KV writes and the decoder's fixed overhead\n",
      pos[0], step_ms[0], pos[1], step_ms[1], pos[2], step_ms[2], per_position * 1e3,
      per_position * (pos[1] + 1), pos[1], pos[0],
      step_ms[0] - replayed - per_position * (pos[0] + 1));
  return kiln::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: %s [L H C CONTEXT VOCAB [TOKENS [PROMPT]]]\n"
          "  Single-stream greedy decode of a random kiln GPT; defaults 6 6 288 256 32000 0 1\n"
          "  (llama2.c's stories15M shape). TOKENS: tokens to generate, 0 fills the context.\n"
          "  PROMPT: prompt length (random tokens). Threads: OMP_NUM_THREADS.\n"
          "  Rows: the decoder and the engine with float weights, the decoder with\n"
          "  bf16 weight matrices (serve --cpu-weights bf16), and in a CUDA build with\n"
          "  a GPU the CUDA decoder (dec-cuda; the breakdown stays the CPU's).\n",
          argv[0]);
      return 0;
    }
  }
  Args a;
  if (!ParseArgs(argc, argv, a)) {
    std::fprintf(stderr, "usage: %s [L H C CONTEXT VOCAB [TOKENS [PROMPT]]] (--help for more)\n",
                 argv[0]);
    return 2;
  }
  GptConfig c;
  c.num_layers = a.layers;
  c.num_heads = a.heads;
  c.channels = a.channels;
  c.max_seq_len = a.context;
  c.vocab_size = a.vocab;
  c.padded_vocab_size = GptConfig::PadVocab(a.vocab);
  auto model = kiln::model::Gpt<float>::Create(c, kModelSeed);
  if (!model.ok()) {
    std::fprintf(stderr, "cannot build the model: %s\n", model.status().ToString().c_str());
    return 2;
  }
  std::mt19937 rng(1);
  std::vector<int32_t> prompt(static_cast<size_t>(a.prompt));
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<unsigned>(a.vocab));

  auto dec = RunDecoder(*model, prompt, a.tokens);
  if (!dec.ok()) {
    std::fprintf(stderr, "decoder run failed: %s\n", dec.status().ToString().c_str());
    return 1;
  }
  // The engine ends a request when its sequence fills the context, so it can
  // generate one token fewer than the decoder at most.
  auto eng = RunEngine(*model, prompt, std::min(a.tokens, a.context - a.prompt));
  if (!eng.ok()) {
    std::fprintf(stderr, "engine run failed: %s\n", eng.status().ToString().c_str());
    return 1;
  }

  // The same decoder with bf16 weight matrices (half the bytes per token).
  auto dec16 = RunDecoder(*model, prompt, a.tokens, Device::kCpuBf16);
  if (!dec16.ok()) {
    std::fprintf(stderr, "bf16 decoder run failed: %s\n", dec16.status().ToString().c_str());
    return 1;
  }

  // And on the GPU, where there is one (CUDA builds).
  std::optional<Run> cuda;
#if KILN_BENCH_CUDA
  int gpus = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&gpus); err != cudaSuccess || gpus == 0) {
    std::printf("# no dec-cuda row: no CUDA device (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "none found");
  } else {
    auto r = RunDecoder(*model, prompt, a.tokens, Device::kCuda);
    if (!r.ok()) {
      std::fprintf(stderr, "cuda decoder run failed: %s\n", r.status().ToString().c_str());
      return 1;
    }
    cuda = std::move(*r);
  }
#endif

  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  const double weights = MatmulWeights(c);
  const double Cd = c.channels;
  std::printf(
      "# decode_bench: kiln single-stream CPU decode, greedy, decode phase only "
      "(prefill excluded)\n");
  std::printf("# machine: %s, %u hardware threads; OMP threads %d\n", CpuModel().c_str(),
              std::thread::hardware_concurrency(), omp_get_max_threads());
  std::printf("# command: %s\n", command.c_str());
  std::printf(
      "# model: kiln GPT-2 (learned positions, LayerNorm, GELU MLP 4C, tied embeddings) "
      "L=%d H=%d C=%d context=%d vocab=%d (padded %d), %.2fM parameters, seed %llu\n",
      c.num_layers, c.num_heads, c.channels, c.max_seq_len, c.vocab_size, c.padded_vocab_size,
      static_cast<double>(model->num_parameters()) / 1e6,
      static_cast<unsigned long long>(kModelSeed));
  std::printf(
      "# FLOPs/token: 2 x %.3fM matmul weights (blocks L x 12C^2 = %.3fM, classifier "
      "Vp x C = %.3fM) = %.2fM, + attention 4 x L x C x attended = %.2fM at the "
      "decoder run's mean of %.1f attended positions: %.2fM\n",
      weights / 1e6, c.num_layers * 12 * Cd * Cd / 1e6, c.padded_vocab_size * Cd / 1e6,
      2 * weights / 1e6, AttentionFlops(c, MeanAttended(*dec)) / 1e6, MeanAttended(*dec),
      (2 * weights + AttentionFlops(c, MeanAttended(*dec))) / 1e6);
  std::printf("%-8s %6s %10s %7s %9s %9s %10s %8s %7s\n", "row", "prompt", "prefill_ms", "decoded",
              "positions", "ms/token", "tokens/s", "GFLOP/s", "threads");
  std::vector<std::pair<const char*, const Run*>> rows = {
      {"decoder", &*dec}, {"engine", &*eng}, {"dec-bf16", &*dec16}};
  if (cuda) rows.emplace_back("dec-cuda", &*cuda);
  for (const auto& [name, r] : rows) {
    const double per = r->decode_ms / r->decoded;
    const double flops = 2 * weights + AttentionFlops(c, MeanAttended(*r));
    char positions[32];
    std::snprintf(positions, sizeof(positions), "%d-%d", r->first_pos,
                  r->first_pos + r->decoded - 1);
    std::printf("%-8s %6d %10.2f %7d %9s %9.3f %10.1f %8.2f %7d\n", name, a.prompt, r->prefill_ms,
                r->decoded, positions, per, 1000.0 / per, flops / per / 1e6, omp_get_max_threads());
  }
  // Both run the same decoder greedily, so they should pick the same tokens;
  // a difference would be a bug, or a near tie flipped by the engine's chunked
  // prefill of a prompt over 64 tokens.
  const auto common = static_cast<ptrdiff_t>(std::min(dec->tokens.size(), eng->tokens.size()));
  const auto diff =
      std::mismatch(dec->tokens.begin(), dec->tokens.begin() + common, eng->tokens.begin());
  if (diff.first == dec->tokens.begin() + common) {
    std::printf("# decoder and engine generated the same %td tokens\n", common);
  } else {
    std::printf("# NOTE: decoder and engine tokens differ from token %td of %td\n",
                diff.first - dec->tokens.begin(), common);
  }
  if (auto st = PrintBreakdown(*model, prompt, *dec); !st.ok()) {
    std::fprintf(stderr, "breakdown failed: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
