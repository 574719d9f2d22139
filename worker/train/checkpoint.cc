#include "worker/train/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/errno_status.h"
#include "worker/data/atomic_file.h"
#include "worker/data/checksum.h"

namespace kiln::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
// Written: the header is followed by the SHA-256 (hex) of every byte before
// it, so that damage to the step, data position, seed or model shape is
// found as surely as damage to a tensor.
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderSumBytes = 64;
// Still read: the same without the header's checksum.
constexpr uint32_t kUnsummedVersion = 1;

json ModelJson(const model::GptConfig& c) {
  return {{"layers", c.num_layers},    {"heads", c.num_heads},
          {"channels", c.channels},    {"maxSeqLen", c.max_seq_len},
          {"vocabSize", c.vocab_size}, {"paddedVocabSize", c.padded_vocab_size}};
}

struct Tensor {
  const char* name;
  std::span<float> data;
};

std::vector<Tensor> Tensors(model::Gpt<float>& m) {
  return {{"params", m.params()}, {"adam_m", m.adam_m()}, {"adam_v", m.adam_v()}};
}

std::string FileName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld.ckpt", static_cast<long long>(step));
  return buf;
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string_view Bytes(std::span<float> t) {
  return {reinterpret_cast<const char*>(t.data()), t.size() * sizeof(float)};
}

// Where a checkpoint's parts lie, as its first 16 bytes say.
struct Layout {
  uint64_t header_end = 0;  // The JSON header is [16, header_end).
  uint64_t body = 0;        // Where the tensors begin.
  bool summed = false;      // Version 2: the header's checksum is [header_end, body).
};

// The layout from a checkpoint's first bytes `prefix` (16 at least), after
// checking its magic and version. DataLoss naming `path` and the damage.
StatusOr<Layout> ReadLayout(std::string_view prefix, const std::string& path) {
  auto damaged = [&](const std::string& why) { return Status::DataLoss(path + ": " + why); };
  if (prefix.size() < 16 || std::memcmp(prefix.data(), kMagic, 8) != 0) {
    return damaged("not a kiln checkpoint (bad magic)");
  }
  const uint32_t version = GetU32(prefix.data() + 8);
  if (version != kVersion && version != kUnsummedVersion) {
    return damaged("format version " + std::to_string(version) + ", want " +
                   std::to_string(kUnsummedVersion) + " or " + std::to_string(kVersion));
  }
  Layout layout;
  layout.header_end = 16ull + GetU32(prefix.data() + 12);
  layout.summed = version == kVersion;
  layout.body = layout.header_end + (layout.summed ? kHeaderSumBytes : 0);
  return layout;
}

// The JSON header from `prefix` (at least `layout.body` bytes), after
// checking its checksum in version 2. DataLoss naming `path` and the damage.
StatusOr<json> ReadHeader(std::string_view prefix, const Layout& layout, const std::string& path) {
  auto damaged = [&](const std::string& why) { return Status::DataLoss(path + ": " + why); };
  if (prefix.size() < layout.body) return damaged("truncated header");
  if (layout.summed && data::Sha256Hex(prefix.substr(0, layout.header_end)) !=
                           prefix.substr(layout.header_end, kHeaderSumBytes)) {
    return damaged("header checksum mismatch");
  }
  json header = json::parse(prefix.substr(16, layout.header_end - 16), nullptr, false);
  if (header.is_discarded() || !header.is_object()) return damaged("header is not JSON");
  return header;
}

// Removes the temporary files of checkpoint writes killed before their
// rename: no reader takes them, but each keeps up to a checkpoint's worth of
// a volume sized for `keep` checkpoints, and enough of them fill it for good
// (every later write fails with ENOSPC).
// Called by the writer, of which there is one (rank 0 of the fence holder).
void RemoveAbandonedWrites(const std::string& dir) {
  std::vector<fs::path> abandoned;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto target = data::AtomicFile::TargetOfTemporary(entry.path().filename().string());
    if (target && CheckpointStepOf(*target, ".ckpt")) abandoned.push_back(entry.path());
  }
  // Best effort: one left behind costs only space, and a write that then
  // finds the volume full says so.
  for (const fs::path& path : abandoned) fs::remove(path, ec);
}

// Reads and verifies the checkpoint file at `path` into `model`.
StatusOr<CheckpointState> ReadOne(const std::string& path, model::Gpt<float>& model) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, "cannot open", path);
  std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return ParseCheckpoint(file, path, model);
}

}  // namespace

StatusOr<CheckpointState> ParseCheckpoint(std::string_view file, const std::string& path,
                                          model::Gpt<float>& model) {
  auto damaged = [&](const std::string& why) { return Status::DataLoss(path + ": " + why); };
  KILN_ASSIGN_OR_RETURN(const Layout layout, ReadLayout(file, path));
  KILN_ASSIGN_OR_RETURN(json header, ReadHeader(file, layout, path));
  const size_t body = layout.body;
  try {
    if (header.at("model") != ModelJson(model.config())) {
      return Status::InvalidArgument(path + ": the checkpoint's model " +
                                     header.at("model").dump() + " differs from this run's " +
                                     ModelJson(model.config()).dump());
    }
    auto position = data::Position::FromJson(header.at("position"));
    if (!position.ok()) return damaged(position.status().message());
    CheckpointState state{header.at("step").get<int64_t>(), *position, std::nullopt, std::nullopt};
    if (header.contains("rng")) state.seed = header.at("rng").at("seed").get<uint64_t>();
    if (header.contains("writer")) {
      state.writer = CheckpointWriter{header.at("writer").at("job").get<std::string>(),
                                      header.at("writer").at("attempt").get<int64_t>()};
    }
    auto tensors = Tensors(model);
    const auto& table = header.at("tensors");
    if (table.size() != tensors.size()) return damaged("wrong number of tensors");
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = table[i];
      const auto offset = t.at("offset").get<uint64_t>(), bytes = t.at("bytes").get<uint64_t>();
      if (t.at("name") != tensors[i].name || bytes != tensors[i].data.size() * sizeof(float)) {
        return damaged("tensor " + std::to_string(i) + " is not " + tensors[i].name +
                       " of the expected size");
      }
      // Compared without overflowing: offset and bytes may say anything.
      if (offset > file.size() - body || bytes > file.size() - body - offset) {
        return damaged("truncated: tensor " + std::string(tensors[i].name) + " needs bytes up to " +
                       std::to_string(body + offset + bytes) + ", the file has " +
                       std::to_string(file.size()));
      }
      std::string_view raw(file.data() + body + offset, bytes);
      if (data::Sha256Hex(raw) != t.at("sha256").get<std::string>()) {
        return damaged("checksum mismatch in " + std::string(tensors[i].name));
      }
    }
    // Verified: only now overwrite the model.
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto offset = table[i].at("offset").get<uint64_t>();
      std::memcpy(tensors[i].data.data(), file.data() + body + offset,
                  tensors[i].data.size() * sizeof(float));
    }
    return state;
  } catch (const json::exception& e) {
    return damaged(std::string("malformed header: ") + e.what());
  }
}

StatusOr<model::GptConfig> ReadCheckpointConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, "cannot open", path);
  auto damaged = [&](const std::string& why) { return Status::DataLoss(path + ": " + why); };
  std::string prefix(16, '\0');
  in.read(prefix.data(), 16);
  prefix.resize(static_cast<size_t>(in.gcount()));
  KILN_ASSIGN_OR_RETURN(const Layout layout, ReadLayout(prefix, path));
  // Sizes are checked against the file before anything is allocated for them:
  // a damaged length or shape may say anything.
  std::error_code ec;
  const uintmax_t file_bytes = fs::file_size(path, ec);
  if (ec) return ErrnoStatus(ec, "cannot read the size of", path);
  if (file_bytes < layout.body) return damaged("truncated header");
  prefix.resize(layout.body);
  if (!in.read(prefix.data() + 16, static_cast<std::streamsize>(layout.body - 16))) {
    return damaged("truncated header");
  }
  KILN_ASSIGN_OR_RETURN(const json h, ReadHeader(prefix, layout, path));
  try {
    const json& m = h.at("model");
    model::GptConfig c;
    c.num_layers = m.at("layers").get<int>();
    c.num_heads = m.at("heads").get<int>();
    c.channels = m.at("channels").get<int>();
    c.max_seq_len = m.at("maxSeqLen").get<int>();
    c.vocab_size = m.at("vocabSize").get<int>();
    c.padded_vocab_size = m.at("paddedVocabSize").get<int>();
    if (Status valid = c.Validate(); !valid.ok()) return damaged(valid.message());
    // params, adam_m and adam_v: float32 each.
    const uint64_t n = static_cast<uint64_t>(c.NumParameters());
    if ((file_bytes - layout.body) / (3 * sizeof(float)) < n) {
      return damaged("truncated: the header's model has " + std::to_string(n) +
                     " parameters, and the file too few bytes for them");
    }
    return c;
  } catch (const json::exception& e) {
    return damaged(std::string("malformed header: ") + e.what());
  }
}

StatusOr<CheckpointState> LoadCheckpoint(const std::string& path, model::Gpt<float>& model) {
  return ReadOne(path, model);
}

std::string EncodeCheckpointHeader(model::Gpt<float>& model, const CheckpointState& state) {
  json table = json::array();
  uint64_t offset = 0;
  for (const auto& t : Tensors(model)) {
    const uint64_t bytes = t.data.size() * sizeof(float);
    table.push_back({{"name", t.name},
                     {"offset", offset},
                     {"bytes", bytes},
                     {"sha256", data::Sha256Hex(Bytes(t.data))}});
    offset += bytes;
  }
  json header_json = {{"step", state.step},
                      {"position", state.position.ToJson()},
                      {"model", ModelJson(model.config())},
                      {"tensors", table}};
  if (state.seed) header_json["rng"] = {{"seed", *state.seed}};
  if (state.writer) {
    header_json["writer"] = {{"job", state.writer->job}, {"attempt", state.writer->attempt}};
  }
  const std::string header = header_json.dump();
  std::string prefix(kMagic, 8);
  PutU32(prefix, kVersion);
  PutU32(prefix, static_cast<uint32_t>(header.size()));
  prefix += header;
  prefix += data::Sha256Hex(prefix);
  return prefix;
}

std::vector<std::string_view> CheckpointTensorBytes(model::Gpt<float>& model) {
  std::vector<std::string_view> out;
  for (const auto& t : Tensors(model)) out.push_back(Bytes(t.data));
  return out;
}

StatusOr<nlohmann::json> ParseCheckpointHeader(std::string_view prefix, const std::string& path) {
  KILN_ASSIGN_OR_RETURN(const Layout layout, ReadLayout(prefix, path));
  return ReadHeader(prefix, layout, path);
}

std::string CheckpointFileName(int64_t step) { return FileName(step); }

std::optional<int64_t> CheckpointStepOf(const std::string& name, const std::string& suffix) {
  const std::string last = name.substr(name.find_last_of('/') + 1);
  if (last.rfind("step-", 0) != 0 || !last.ends_with(suffix)) return std::nullopt;
  const std::string digits = last.substr(5, last.size() - 5 - suffix.size());
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

StatusOr<std::string> WriteCheckpoint(const std::string& dir, model::Gpt<float>& model,
                                      const CheckpointState& state, int keep) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  // Where output goes is the infrastructure's: Unavailable (exit 3) whatever
  // the errno, not ErrnoStatus's code (base/errno_status.h).
  if (ec) return Status::Unavailable("cannot create " + dir + ": " + ec.message());
  RemoveAbandonedWrites(dir);
  const std::string prefix = EncodeCheckpointHeader(model, state);
  const std::string path = (fs::path(dir) / FileName(state.step)).string();
  KILN_ASSIGN_OR_RETURN(data::AtomicFile file, data::AtomicFile::Create(path));
  KILN_RETURN_IF_ERROR(file.Append(prefix.data(), prefix.size()));
  for (const auto& t : Tensors(model)) {
    KILN_RETURN_IF_ERROR(file.Append(t.data.data(), t.data.size() * sizeof(float)));
  }
  KILN_RETURN_IF_ERROR(file.Commit());
  KILN_ASSIGN_OR_RETURN(auto all, ListCheckpoints(dir));
  for (size_t i = static_cast<size_t>(std::max(keep, 1)); i < all.size(); ++i) {
    fs::remove(all[i], ec);  // Best effort: a leftover old checkpoint is harmless.
  }
  return path;
}

StatusOr<std::vector<std::string>> ListCheckpoints(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == 18 && name.rfind("step-", 0) == 0 && name.ends_with(".ckpt")) {
      out.push_back(entry.path().string());
    }
  }
  if (ec) return ErrnoStatus(ec, "cannot list", dir);
  std::sort(out.rbegin(), out.rend());  // Zero-padded steps: newest first.
  return out;
}

std::string NoneTaken(const std::string& where, size_t damaged, size_t all) {
  if (damaged == all) {
    return "every checkpoint in " + where + " is damaged (" + std::to_string(all) + " tried)";
  }
  return "no checkpoint in " + where + " to resume from: " + std::to_string(damaged) +
         " damaged, " + std::to_string(all - damaged) + " passed over";
}

StatusOr<std::optional<CheckpointState>> RestoreLatestCheckpoint(
    const std::string& dir, model::Gpt<float>& model,
    const std::function<void(const std::string&)>& warn, const CheckpointFilter& accept) {
  KILN_ASSIGN_OR_RETURN(auto all, ListCheckpoints(dir));
  size_t damaged = 0;
  for (const auto& path : all) {
    auto state = ReadOne(path, model);
    if (state.ok()) {
      Status taken = accept ? accept(*state) : Status::Ok();
      if (taken.ok()) return std::optional<CheckpointState>(*state);
      warn("passing over checkpoint " + path + ": " + taken.message());
      continue;
    }
    if (state.status().code() != StatusCode::kDataLoss) return state.status();
    warn("skipping damaged checkpoint: " + state.status().message());
    ++damaged;
  }
  if (damaged == 0) return std::optional<CheckpointState>();
  return Status::DataLoss(NoneTaken(dir, damaged, all.size()));
}

}  // namespace kiln::train
