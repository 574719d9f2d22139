#include "worker/train/llmc_checkpoint.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "kernels/cpu/matmul_bf16.h"
#include "worker/data/atomic_file.h"

namespace kiln::train {
namespace {

constexpr int32_t kMagic = 20240326;
constexpr int32_t kVersionFloat32 = 3;
constexpr int32_t kVersionBf16 = 5;
constexpr int kHeaderInts = 256;

}  // namespace

bool IsLlmcCheckpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  return in.read(reinterpret_cast<char*>(&magic), sizeof magic) && magic == kMagic;
}

StatusOr<model::Gpt<float>> ReadLlmcCheckpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::NotFound(path + ": no such llm.c model file");
  }
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  std::ifstream in(path, std::ios::binary);
  int32_t header[kHeaderInts] = {};
  if (ec || !in.read(reinterpret_cast<char*>(header), sizeof header)) {
    return Status::DataLoss(path + ": shorter than llm.c's 1024-byte header");
  }
  if (header[0] != kMagic) {
    return Status::DataLoss(path + ": not an llm.c model file (magic " + std::to_string(header[0]) +
                            ", want " + std::to_string(kMagic) + ")");
  }
  const int32_t version = header[1];
  if (version != kVersionFloat32 && version != kVersionBf16) {
    return Status::DataLoss(path + ": llm.c model version " + std::to_string(version) +
                            " (kiln reads 3, float32, and 5, bf16)");
  }
  model::GptConfig c;
  c.max_seq_len = header[2];
  c.vocab_size = header[3];
  c.num_layers = header[4];
  c.num_heads = header[5];
  c.channels = header[6];
  c.padded_vocab_size = header[7];
  if (Status s = c.Validate(); !s.ok()) {
    return Status::InvalidArgument(path + ": llm.c header: " + s.message());
  }
  // The size before the model: a header may claim any shape, and only a file
  // that holds its parameters is worth allocating them for.
  const int64_t element = version == kVersionFloat32 ? 4 : 2;
  const int64_t body = file_bytes - static_cast<int64_t>(sizeof header);
  const int64_t n = c.NumParameters();  // Validate has checked that it fits.
  if (body % element != 0 || body / element != n) {
    return Status::DataLoss(path + ": " + std::to_string(file_bytes) + " bytes; the header's " +
                            "shape needs " + std::to_string(sizeof header) + " + " +
                            std::to_string(n) + " x " + std::to_string(element));
  }
  KILN_ASSIGN_OR_RETURN(auto m, model::Gpt<float>::Create(c, 0));
  const std::span<float> params = m.params();
  if (version == kVersionFloat32) {
    in.read(reinterpret_cast<char*>(params.data()),
            static_cast<std::streamsize>(params.size_bytes()));
  } else {
    std::vector<uint16_t> raw(params.size());
    in.read(reinterpret_cast<char*>(raw.data()),
            static_cast<std::streamsize>(raw.size() * sizeof(uint16_t)));
    for (size_t i = 0; i < raw.size(); ++i) params[i] = kernels::cpu::Bf16ToFloat(raw[i]);
  }
  if (!in) return Status::DataLoss(path + ": read failed in the parameters");
  return m;
}

Status WriteLlmcCheckpoint(const std::string& path, const model::Gpt<float>& model,
                           LlmcPrecision precision) {
  const model::GptConfig& c = model.config();
  int32_t header[kHeaderInts] = {};
  header[0] = kMagic;
  header[1] = precision == LlmcPrecision::kFloat32 ? kVersionFloat32 : kVersionBf16;
  header[2] = c.max_seq_len;
  header[3] = c.vocab_size;
  header[4] = c.num_layers;
  header[5] = c.num_heads;
  header[6] = c.channels;
  header[7] = c.padded_vocab_size;
  KILN_ASSIGN_OR_RETURN(data::AtomicFile out, data::AtomicFile::Create(path));
  KILN_RETURN_IF_ERROR(out.Append(header, sizeof header));
  const std::span<const float> params = model.params();
  if (precision == LlmcPrecision::kFloat32) {
    KILN_RETURN_IF_ERROR(out.Append(params.data(), params.size_bytes()));
  } else {
    const std::vector<uint16_t> raw = kernels::cpu::ToBf16(params);
    KILN_RETURN_IF_ERROR(out.Append(raw.data(), raw.size() * sizeof(uint16_t)));
  }
  return out.Commit();
}

}  // namespace kiln::train
