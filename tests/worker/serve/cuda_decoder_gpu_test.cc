// worker/serve/cuda_decoder.h against the CpuDecoder on the same model and
// block tables: prefill chunks, decode steps and mixed batches of three
// sequences whose cache blocks are scattered and interleaved. Logits agree
// to bf16 precision: relative L2 error per call under 2e-2 (bf16 weights and
// activations carry 2^-9 relative rounding into sums of C terms; a wrong
// block, position or head shows as errors of order 1). Then the Engine on
// the CUDA decoder serves concurrent requests to completion. Catch2 test
// cases, skipped without a GPU (tests/support/gpu.h); every check prints a
// line with its figures.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/gpu.h"
#include "tests/support/random_gpt.h"
#include "worker/serve/cuda_decoder.h"
#include "worker/serve/decoder.h"
#include "worker/serve/engine.h"
#include "worker/serve/kv_cache.h"

namespace kiln::serve {
namespace {

// Prints "<what> ok|FAILED[: detail]" and CHECKs `ok`.
bool Expect(const std::string& what, bool ok, const std::string& detail = "") {
  std::printf("  %-52s %s%s%s\n", what.c_str(), ok ? "ok" : "FAILED", detail.empty() ? "" : ": ",
              detail.c_str());
  INFO(what << (detail.empty() ? "" : ": ") << detail);
  CHECK(ok);
  return ok;
}

model::Gpt<float> RandomModel(int layers, int heads, int channels, int context) {
  return testing::RandomGpt(layers, heads, channels, context, 5, 0.2f);
}

double RelativeL2(const std::vector<float>& got, const std::vector<float>& want, int S, int V,
                  int Vp) {
  double num = 0, den = 0;
  for (int s = 0; s < S; ++s) {
    for (int v = 0; v < V; ++v) {
      const double g = got[static_cast<size_t>(s * Vp + v)],
                   w = want[static_cast<size_t>(s * Vp + v)];
      num += (g - w) * (g - w);
      den += w * w;
    }
  }
  return std::sqrt(num / den);
}

std::vector<int32_t> Tokens(int n, int salt) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 37 + salt * 101 + 7) % 257);
  return t;
}

void TestLogits(int layers, int heads, int channels) {
  std::printf("logits, L=%d NH=%d C=%d:\n", layers, heads, channels);
  constexpr int kContext = 96, kBlock = 8, kBlocks = 24;
  auto model = RandomModel(layers, heads, channels, kContext);
  const model::GptConfig& c = model.config();
  PagedKvCache cache(c.num_layers, c.channels, kBlock, kBlocks);
  CpuDecoder cpu(model, cache);
  auto gpu = NewCudaDecoder(model, kBlock, kBlocks, 0);
  if (!Expect("NewCudaDecoder", gpu.ok(), gpu.ok() ? "" : gpu.status().ToString())) return;
  // The same without CUDA graphs: decode steps must agree with the graphs'.
  auto eager = NewCudaDecoder(model, kBlock, kBlocks, 0, {.graphs = false});
  if (!Expect("NewCudaDecoder without graphs", eager.ok())) return;
  Expect("device", (*gpu)->device() == "cuda:0", (*gpu)->device());
  // Scattered, interleaved block tables.
  const std::vector<int> a = {5, 2, 9, 14, 20}, b = {0, 7, 11, 23, 12}, d = {3, 1, 4, 8, 6, 15};
  const auto ta = Tokens(40, 1), tb = Tokens(40, 2), td = Tokens(48, 3);
  struct Call {
    const char* what;
    std::vector<SequenceSlice> slices;
  };
  auto slice = [](const std::vector<int32_t>& t, int start, int n, const std::vector<int>& blocks) {
    return SequenceSlice{.tokens = std::span<const int32_t>(t).subspan(static_cast<size_t>(start),
                                                                       static_cast<size_t>(n)),
                         .start = start,
                         .blocks = &blocks};
  };
  std::vector<Call> calls = {
      {"prefill two prompts", {slice(ta, 0, 12, a), slice(tb, 0, 5, b)}},
      {"decode + chunk + new prompt",
       {slice(ta, 12, 1, a), slice(tb, 5, 10, b), slice(td, 0, 21, d)}},
  };
  for (int step = 0; step < 6; ++step) {
    calls.push_back(
        {"decode all three",
         {slice(ta, 13 + step, 1, a), slice(tb, 15 + step, 1, b), slice(td, 21 + step, 1, d)}});
  }
  calls.push_back({"chunk crossing blocks", {slice(td, 27, 13, d)}});
  double worst = 0, worst_eager = 0;
  int argmax_same = 0, rows = 0;
  for (const Call& call : calls) {
    std::vector<float> want, got, got_eager;
    Status cs = cpu.Forward(call.slices, want);
    Status gs = (*gpu)->Forward(call.slices, got);
    Status es = (*eager)->Forward(call.slices, got_eager);
    if (!Expect(std::string(call.what) + " runs", cs.ok() && gs.ok() && es.ok(),
                !cs.ok()   ? cs.ToString()
                : !gs.ok() ? gs.ToString()
                           : es.ToString())) {
      continue;
    }
    const int S = static_cast<int>(call.slices.size());
    const double err = RelativeL2(got, want, S, c.vocab_size, c.padded_vocab_size);
    worst = std::max(worst, err);
    worst_eager =
        std::max(worst_eager, RelativeL2(got, got_eager, S, c.vocab_size, c.padded_vocab_size));
    for (int s = 0; s < S; ++s) {
      auto row = [&](const std::vector<float>& l) {
        const float* p = l.data() + s * c.padded_vocab_size;
        return static_cast<int>(std::max_element(p, p + c.vocab_size) - p);
      };
      argmax_same += row(got) == row(want);
      ++rows;
    }
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3e (tolerance 2.0e-02)", worst);
  Expect("logits (relative L2, worst call)", worst < 2e-2, buf);
  // 6 decode steps of 3 sequences: graphs for 4 rows (one padding row).
  Expect("decode steps ran as graph launches", CudaDecoderGraphLaunches(**gpu) == 6,
         std::to_string(CudaDecoderGraphLaunches(**gpu)));
  Expect("no graphs when they are off", CudaDecoderGraphLaunches(**eager) == 0);
  // Same kernels; cuBLAS may pick another algorithm for the padded shape.
  std::snprintf(buf, sizeof buf, "%.3e (tolerance 5.0e-03)", worst_eager);
  Expect("graph and eager logits (relative L2, worst call)", worst_eager < 5e-3, buf);
  std::snprintf(buf, sizeof buf, "%d of %d rows", argmax_same, rows);
  Expect("greedy token agrees on most rows", argmax_same * 10 >= rows * 9, buf);

  std::vector<float> out;
  // A table longer than the context needs (its tail is never read) decodes
  // without a graph, and graphs stay on for the next step.
  const std::vector<int> long_table = {16, 17, 18, 19, 21, 22, 10, 13, 0, 0, 0, 0, 0};
  const auto t0 = Tokens(2, 7);
  std::vector<SequenceSlice> first = {slice(t0, 0, 1, long_table)};
  std::vector<SequenceSlice> second = {slice(t0, 1, 1, long_table)};
  const int64_t before = CudaDecoderGraphLaunches(**gpu);
  const bool long_ok = (*gpu)->Forward(first, out).ok();
  const std::vector<int> short_table(long_table.begin(), long_table.begin() + 12);
  second[0].blocks = &short_table;
  const bool next_ok = (*gpu)->Forward(second, out).ok();
  Expect("a longer block table decodes, then graphs go on",
         long_ok && next_ok && CudaDecoderGraphLaunches(**gpu) == before + 1,
         std::to_string(CudaDecoderGraphLaunches(**gpu) - before) + " graph launches");
  const std::vector<int> outside = {kBlocks + 3};
  const auto t1 = Tokens(1, 9);
  std::vector<SequenceSlice> bad = {slice(t1, 0, 1, outside)};
  Status s = (*gpu)->Forward(bad, out);
  Expect("a block outside the cache is InvalidArgument", s.code() == StatusCode::kInvalidArgument,
         s.ToString());
  const std::vector<int32_t> big = {300};
  bad = {SequenceSlice{.tokens = big, .start = 0, .blocks = &a}};
  s = (*gpu)->Forward(bad, out);
  Expect("a token outside the vocabulary is InvalidArgument",
         s.code() == StatusCode::kInvalidArgument, s.ToString());
}

void TestEngine() {
  std::printf("engine on the CUDA decoder:\n");
  auto model = RandomModel(2, 4, 64, 128);
  auto engine =
      Engine::Create(model, {.max_running = 4, .max_batch_tokens = 64, .prefill_chunk = 16},
                     [](const model::Gpt<float>& m, int block_size, int num_blocks) {
                       return NewCudaDecoder(m, block_size, num_blocks, 0);
                     });
  if (!Expect("Engine::Create", engine.ok(), engine.ok() ? "" : engine.status().ToString())) return;
  Expect("engine device", (*engine)->device() == "cuda:0", (*engine)->device());
  struct Result {
    int tokens = 0;
    FinishReason finish = FinishReason::kNone;
  };
  std::vector<Result> results(6);
  for (int i = 0; i < 6; ++i) {
    GenerateRequest r{.prompt = Tokens(5 + 7 * i, i), .max_tokens = 20, .ignore_eos = true};
    r.sampling.temperature = i % 2 == 0 ? 0.0 : 0.8;
    r.sampling.seed = static_cast<uint64_t>(i);
    auto id = (*engine)->Submit(r, [&results, i](const TokenEvent& e) {
      if (e.token) ++results[static_cast<size_t>(i)].tokens;
      if (e.finish != FinishReason::kNone) results[static_cast<size_t>(i)].finish = e.finish;
    });
    Expect("submit " + std::to_string(i), id.ok(), id.ok() ? "" : id.status().ToString());
  }
  int steps = 0;
  for (; steps < 10000; ++steps) {
    auto worked = (*engine)->Step();
    if (!worked.ok()) {
      Expect("step " + std::to_string(steps), false, worked.status().ToString());
      break;
    }
    if (!*worked) break;
  }
  Expect("the engine goes idle", steps < 10000, std::to_string(steps) + " steps");
  int done = 0;
  for (const Result& r : results) done += r.tokens == 20 && r.finish == FinishReason::kLength;
  Expect("6 requests (4 at a time) each end with 20 tokens", done == 6,
         std::to_string(done) + " of 6");
  Expect("every KV block is returned", (*engine)->kv_utilization() == 0);
}

}  // namespace

TEST_CASE("logits", "[gpu]") {
  KILN_REQUIRE_GPU();
  TestLogits(2, 4, 64);
  TestLogits(3, 6, 96);
}

TEST_CASE("engine", "[gpu]") {
  KILN_REQUIRE_GPU();
  TestEngine();
}

}  // namespace kiln::serve
