// llm.c model files: the header llm.c's train_gpt2.c reads, exact float32
// round trips, bf16 within its rounding, and clear errors for files that are
// not, or no longer, llm.c models. LoadModel reads every format kiln knows.
#include "worker/train/llmc_checkpoint.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/matmul_bf16.h"
#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "worker/train/checkpoint.h"
#include "worker/train/load_model.h"

namespace kiln::train {
namespace {

std::vector<int32_t> Header(const std::string& path) {
  std::vector<int32_t> h(256);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(h.data()), 1024);
  return h;
}

void NoWarnings(const std::string& message) { FAIL("unexpected warning: " << message); }

TEST_CASE("llm.c model files round-trip kiln's parameters with llm.c's header", "[train][llmc]") {
  testing::TempDir dir;
  auto m = testing::RandomGpt(2, 3, 48, 40, 7, 0.2f);
  const std::string path = dir.path() + "/model.bin";
  REQUIRE(WriteLlmcCheckpoint(path, m).ok());
  CHECK(IsLlmcCheckpoint(path));
  // Header: magic, version 3 (float32), maxT, V, L, NH, C, Vp; then zeros.
  const auto h = Header(path);
  CHECK((std::vector<int32_t>(h.begin(), h.begin() + 8) ==
         std::vector<int32_t>{20240326, 3, 40, 257, 2, 3, 48, 320}));
  CHECK(std::all_of(h.begin() + 8, h.end(), [](int32_t v) { return v == 0; }));
  CHECK(std::filesystem::file_size(path) == 1024 + 4 * m.params().size());
  // The tensors follow in Param order: the first float is wte[0][0], the one
  // after wte and wpe is ln1w[0][0].
  std::ifstream in(path, std::ios::binary);
  float first = 0, ln1 = 0;
  in.seekg(1024);
  in.read(reinterpret_cast<char*>(&first), 4);
  in.seekg(1024 + 4 * (320 * 48 + 40 * 48));
  in.read(reinterpret_cast<char*>(&ln1), 4);
  CHECK(first == m.param(model::Param::kWte)[0]);
  CHECK(ln1 == m.param(model::Param::kLn1W)[0]);

  auto back = ReadLlmcCheckpoint(path);
  REQUIRE(back.ok());
  CHECK(back->config().num_layers == 2);
  CHECK(back->config().padded_vocab_size == 320);
  CHECK((std::vector<float>(back->params().begin(), back->params().end()) ==
         std::vector<float>(m.params().begin(), m.params().end())));
  CHECK(std::all_of(back->adam_m().begin(), back->adam_m().end(), [](float v) { return v == 0; }));

  SECTION("bf16 (version 5) keeps each parameter to its bf16 rounding") {
    const std::string p16 = dir.path() + "/model16.bin";
    REQUIRE(WriteLlmcCheckpoint(p16, m, LlmcPrecision::kBf16).ok());
    CHECK(Header(p16)[1] == 5);
    CHECK(std::filesystem::file_size(p16) == 1024 + 2 * m.params().size());
    auto b16 = ReadLlmcCheckpoint(p16);
    REQUIRE(b16.ok());
    size_t exact = 0;
    for (size_t i = 0; i < m.params().size(); ++i) {
      const float want = kernels::cpu::Bf16ToFloat(kernels::cpu::FloatToBf16(m.params()[i]));
      exact += b16->params()[i] == want;
    }
    CHECK(exact == m.params().size());
  }
  SECTION("LoadModel reads it, and a kiln checkpoint of the same weights") {
    auto loaded = LoadModel(path, "", NoWarnings);
    REQUIRE(loaded.ok());
    CHECK(loaded->format == "llm.c");
    REQUIRE(WriteCheckpoint(dir.path() + "/ckpt", m, {.step = 0}, 1).ok());
    auto kiln = LoadModel(dir.path() + "/ckpt", "", NoWarnings);
    REQUIRE(kiln.ok());
    CHECK(kiln->format == "kiln");
    CHECK((std::vector<float>(kiln->model.params().begin(), kiln->model.params().end()) ==
           std::vector<float>(m.params().begin(), m.params().end())));
  }
}

TEST_CASE("damaged or foreign llm.c files are refused with the reason", "[train][llmc]") {
  testing::TempDir dir;
  auto m = testing::RandomGpt(1, 2, 32, 16, 3, 0.1f);
  const std::string path = dir.path() + "/model.bin";
  REQUIRE(WriteLlmcCheckpoint(path, m).ok());
  auto rewrite_header = [&](int index, int32_t value) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4 * index);
    f.write(reinterpret_cast<const char*>(&value), 4);
  };
  SECTION("missing") {
    auto r = ReadLlmcCheckpoint(dir.path() + "/none.bin");
    CHECK(r.status().code() == StatusCode::kNotFound);
  }
  SECTION("truncated") {
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
    auto r = ReadLlmcCheckpoint(path);
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Catch::Contains("bytes; the header's shape needs"));
  }
  // Found by fuzz/llmc_model_fuzz.cc: the model the header describes was
  // allocated (and initialised) before the file's size was compared with it.
  SECTION("a header claiming a model far bigger than the file") {
    rewrite_header(7, 0x5e000040);  // padded_vocab_size: 1.6 G rows.
    auto r = ReadLlmcCheckpoint(path);
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Catch::Contains("bytes; the header's shape needs"));
  }
  SECTION("a header whose parameter count overflows") {
    rewrite_header(4, 2000000000);  // num_layers
    rewrite_header(6, 2000000000);  // channels (num_heads, 2, divides it)
    CHECK(ReadLlmcCheckpoint(path).status().code() == StatusCode::kInvalidArgument);
  }
  SECTION("shorter than a header") {
    std::filesystem::resize_file(path, 100);
    CHECK(ReadLlmcCheckpoint(path).status().code() == StatusCode::kDataLoss);
  }
  SECTION("another version") {
    rewrite_header(1, 4);
    auto r = ReadLlmcCheckpoint(path);
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Catch::Contains("version 4"));
  }
  SECTION("not llm.c at all") {
    rewrite_header(0, 12345);
    CHECK_FALSE(IsLlmcCheckpoint(path));
    auto r = ReadLlmcCheckpoint(path);
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Catch::Contains("not an llm.c model file"));
  }
  SECTION("a shape kiln cannot build") {
    rewrite_header(5, 5);  // 32 channels over 5 heads.
    auto r = ReadLlmcCheckpoint(path);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains("multiple of num_heads"));
  }
}

}  // namespace
}  // namespace kiln::train
