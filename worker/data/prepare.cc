#include "worker/data/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include <system_error>
#include <utility>

#include "base/file.h"
#include "worker/data/checksum.h"
#include "worker/data/shard.h"
#include "worker/data/tokenizer.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;

bool IsSeparatorLine(std::string_view line) { return line == "%" || line == "%\r"; }

bool IsBlank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

// A 64-bit key per document that orders documents pseudo-randomly but
// reproducibly: FNV-1a over the bytes, then splitmix64's finalizer, which
// spreads FNV's poorly mixed bits over the whole key.
uint64_t DocumentKey(std::string_view doc) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : doc) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

// Marks which of the documents (given by their keys, in order) go to val.
std::vector<bool> ChooseValidation(const std::vector<uint64_t>& keys, double val_fraction) {
  const auto n = static_cast<int64_t>(keys.size());
  std::vector<bool> is_val(keys.size(), false);
  if (val_fraction <= 0 || n < 2) return is_val;
  int64_t count = std::llround(static_cast<double>(n) * val_fraction);
  count = std::clamp<int64_t>(count, 1, n - 1);
  std::vector<std::pair<uint64_t, int64_t>> order;
  order.reserve(keys.size());
  for (int64_t i = 0; i < n; ++i) order.emplace_back(keys[static_cast<std::size_t>(i)], i);
  std::nth_element(order.begin(), order.begin() + (count - 1), order.end());
  for (int64_t i = 0; i < count; ++i) {
    is_val[static_cast<std::size_t>(order[static_cast<std::size_t>(i)].second)] = true;
  }
  return is_val;
}

// Output failures are storage failures, whatever the system called them.
Status OutputError(const Status& status) {
  if (status.ok()) return status;
  return Status::Unavailable(status.message());
}

// Input read failures keep their code, except unclassified I/O errors, which
// are the storage's fault too.
Status InputError(const Status& status) {
  if (status.code() == StatusCode::kInternal) return Status::Unavailable(status.message());
  return status;
}

std::string ShardName(std::string_view split, std::size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "_%06zu.bin", index);
  return std::string(split) + buf;
}

// Collects one split's tokens and writes them as shards of `shard_tokens`.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string split, int64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens) {
    // Reserved, not touched: pages become resident only as tokens arrive, and
    // the buffer never reallocates.
    buffer_.reserve(static_cast<std::size_t>(shard_tokens_));
  }

  Status AddDocument(std::string_view doc) {
    ++result_.documents;
    std::vector<uint16_t> tokens = tokenizer_.Encode(doc);
    tokens.push_back(ByteTokenizer::kEot);
    std::span<const uint16_t> rest(tokens);
    while (!rest.empty()) {
      std::size_t room = static_cast<std::size_t>(shard_tokens_) - buffer_.size();
      std::size_t take = std::min(room, rest.size());
      buffer_.insert(buffer_.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(take));
      rest = rest.subspan(take);
      if (buffer_.size() == static_cast<std::size_t>(shard_tokens_)) KILN_RETURN_IF_ERROR(Flush());
    }
    return Status::Ok();
  }

  // Writes the last, partial shard and returns the split's manifest entry.
  StatusOr<ManifestSplit> Finish() {
    if (!buffer_.empty()) KILN_RETURN_IF_ERROR(Flush());
    return result_;
  }

 private:
  Status Flush() {
    std::string name = ShardName(split_, result_.shards.size());
    std::string path = (fs::path(dir_) / name).string();
    KILN_RETURN_IF_ERROR(OutputError(WriteShard(path, buffer_)));
    StatusOr<std::string> sha = Sha256File(path);
    if (!sha.ok()) return OutputError(sha.status());
    const auto tokens = static_cast<int64_t>(buffer_.size());
    result_.shards.push_back({.file = name, .tokens = tokens, .sha256 = std::move(*sha)});
    result_.tokens += tokens;
    buffer_.clear();
    return Status::Ok();
  }

  ByteTokenizer tokenizer_;
  std::string dir_;
  std::string split_;
  int64_t shard_tokens_;
  std::vector<uint16_t> buffer_;
  ManifestSplit result_;
};

// Removes shard files of an earlier run that `keep` does not name.
Status RemoveStaleShards(const std::string& dir, const std::set<std::string>& keep) {
  static const std::regex kShardFile("(train|val)_[0-9]{6,}\\.bin");
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (std::regex_match(name, kShardFile) && !keep.contains(name)) stale.push_back(it->path());
  }
  // Where output goes is the infrastructure's: Unavailable (exit 3) whatever
  // the errno, not ErrnoStatus's code (base/errno_status.h).
  if (ec) return Status::Unavailable("cannot list " + dir + ": " + ec.message());
  for (const auto& p : stale) {
    if (!fs::remove(p, ec) && ec) {
      return Status::Unavailable("cannot remove the stale shard " + p.string() + ": " +
                                 ec.message());
    }
  }
  return Status::Ok();
}

}  // namespace

std::string_view InputFormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kAuto:
      return "auto";
    case InputFormat::kFortunes:
      return "fortunes";
    case InputFormat::kText:
      return "text";
  }
  return "unknown";
}

StatusOr<InputFormat> ParseInputFormat(std::string_view name) {
  for (InputFormat f : {InputFormat::kAuto, InputFormat::kFortunes, InputFormat::kText}) {
    if (name == InputFormatName(f)) return f;
  }
  return Status::InvalidArgument("unknown input format '" + std::string(name) +
                                 "' (want auto, fortunes or text)");
}

InputFormat DetectFormat(std::string_view text) {
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    if (IsSeparatorLine(text.substr(start, end - start))) return InputFormat::kFortunes;
    start = end + 1;
  }
  return InputFormat::kText;
}

std::vector<std::string_view> SplitDocuments(std::string_view text, InputFormat format) {
  if (format == InputFormat::kAuto) format = DetectFormat(text);
  std::vector<std::string_view> docs;
  auto add = [&](std::string_view doc) {
    if (!IsBlank(doc)) docs.push_back(doc);
  };
  if (format == InputFormat::kText) {
    add(text);
    return docs;
  }
  std::size_t doc_start = 0;
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    std::size_t newline = text.find('\n', line_start);
    std::size_t line_end = newline == std::string_view::npos ? text.size() : newline;
    std::size_t next = newline == std::string_view::npos ? text.size() : newline + 1;
    if (IsSeparatorLine(text.substr(line_start, line_end - line_start))) {
      add(text.substr(doc_start, line_start - doc_start));
      doc_start = next;
    }
    line_start = next;
  }
  add(text.substr(doc_start));
  return docs;
}

StatusOr<std::vector<std::string>> ListInputFiles(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  std::set<fs::path> seen;
  auto add = [&](const fs::path& p) {
    std::error_code ec;
    fs::path canonical = fs::canonical(p, ec);
    if (ec) canonical = p;
    if (seen.insert(canonical).second) files.push_back(p.string());
  };
  for (const std::string& input : inputs) {
    std::error_code ec;
    fs::file_status st = fs::status(input, ec);
    if (st.type() == fs::file_type::not_found) {
      return Status::NotFound("input " + input + " does not exist");
    }
    // An input that cannot be read is a data error (exit 6) whatever the errno.
    if (ec) return Status::PermissionDenied("input " + input + ": " + ec.message());
    if (fs::is_regular_file(st)) {
      add(input);
      continue;
    }
    if (!fs::is_directory(st)) {
      return Status::FailedPrecondition("input " + input +
                                        " is neither a regular file nor a directory");
    }
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(input, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.starts_with('.') || name.ends_with(".dat")) continue;
      std::error_code entry_ec;
      if (it->is_regular_file(entry_ec)) entries.push_back(it->path());
    }
    if (ec) {
      return Status::PermissionDenied("cannot list input directory " + input + ": " + ec.message());
    }
    if (entries.empty()) {
      return Status::FailedPrecondition("input directory " + input + " holds no data files");
    }
    std::sort(entries.begin(), entries.end(), [](const fs::path& a, const fs::path& b) {
      return a.filename().string() < b.filename().string();
    });
    for (const auto& e : entries) add(e);
  }
  return files;
}

Status ValidatePrepareOptions(const PrepareOptions& options) {
  if (options.inputs.empty()) return Status::InvalidArgument("no input given (--input)");
  if (options.output_dir.empty()) return Status::InvalidArgument("no output folder (--output)");
  if (!(options.val_fraction >= 0 && options.val_fraction <= 0.5)) {
    return Status::InvalidArgument("the validation fraction must be in [0, 0.5], got " +
                                   std::to_string(options.val_fraction));
  }
  if (options.shard_tokens < 1 || options.shard_tokens > kMaxShardTokens) {
    return Status::InvalidArgument("tokens per shard must be in [1, " +
                                   std::to_string(kMaxShardTokens) + "], got " +
                                   std::to_string(options.shard_tokens));
  }
  return Status::Ok();
}

StatusOr<PrepareResult> Prepare(const PrepareOptions& options) {
  KILN_RETURN_IF_ERROR(ValidatePrepareOptions(options));
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> files, ListInputFiles(options.inputs));

  Manifest manifest;
  manifest.vocab_size = ByteTokenizer::kVocabSize;
  manifest.eot = ByteTokenizer::kEot;
  manifest.val_fraction = options.val_fraction;
  manifest.shard_tokens = options.shard_tokens;

  // First pass: the documents' keys, to choose the validation split.
  std::vector<uint64_t> keys;
  for (const std::string& path : files) {
    StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) return InputError(text.status());
    InputFormat format =
        options.format == InputFormat::kAuto ? DetectFormat(*text) : options.format;
    std::vector<std::string_view> docs = SplitDocuments(*text, format);
    for (std::string_view doc : docs) keys.push_back(DocumentKey(doc));
    manifest.inputs.push_back({.path = path,
                               .format = std::string(InputFormatName(format)),
                               .bytes = static_cast<int64_t>(text->size()),
                               .documents = static_cast<int64_t>(docs.size()),
                               .sha256 = Sha256Hex(*text)});
  }
  if (keys.empty()) {
    std::string names;
    for (const auto& in : options.inputs) names += (names.empty() ? "" : ", ") + in;
    return Status::FailedPrecondition("the inputs hold no documents: " + names);
  }
  const std::vector<bool> is_val = ChooseValidation(keys, options.val_fraction);

  std::error_code ec;
  if (fs::exists(options.output_dir, ec) && !fs::is_directory(options.output_dir, ec)) {
    return Status::InvalidArgument("output " + options.output_dir + " is not a directory");
  }
  fs::create_directories(options.output_dir, ec);
  // Where output goes is the infrastructure's: Unavailable (exit 3) whatever
  // the errno, not ErrnoStatus's code (base/errno_status.h).
  if (ec) {
    return Status::Unavailable("cannot create the output directory " + options.output_dir + ": " +
                               ec.message());
  }

  // Second pass: write the documents to their splits.
  SplitWriter train(options.output_dir, "train", options.shard_tokens);
  SplitWriter val(options.output_dir, "val", options.shard_tokens);
  std::size_t doc_index = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const ManifestInput& input = manifest.inputs[i];
    StatusOr<std::string> text = ReadFile(input.path);
    if (!text.ok()) return InputError(text.status());
    if (Sha256Hex(*text) != input.sha256) {
      return Status::DataLoss("input " + input.path + " changed while prepare was reading it");
    }
    InputFormat format = input.format == "fortunes" ? InputFormat::kFortunes : InputFormat::kText;
    for (std::string_view doc : SplitDocuments(*text, format)) {
      SplitWriter& writer = is_val[doc_index++] ? val : train;
      KILN_RETURN_IF_ERROR(writer.AddDocument(doc));
    }
  }
  KILN_ASSIGN_OR_RETURN(manifest.train, train.Finish());
  KILN_ASSIGN_OR_RETURN(manifest.val, val.Finish());

  PrepareResult result;
  result.manifest_path = (fs::path(options.output_dir) / kManifestFileName).string();
  KILN_RETURN_IF_ERROR(OutputError(WriteManifest(result.manifest_path, manifest)));
  std::set<std::string> keep;
  for (const ManifestSplit* split : {&manifest.train, &manifest.val}) {
    for (const auto& s : split->shards) keep.insert(s.file);
  }
  KILN_RETURN_IF_ERROR(RemoveStaleShards(options.output_dir, keep));
  result.manifest = std::move(manifest);
  return result;
}

}  // namespace kiln::data

namespace kiln::data {

namespace {

// A store failure: retryable storage trouble (exit 3), except what retrying
// cannot fix: refused credentials, a missing bucket, a malformed request.
Status StoreError(const Status& s) {
  if (s.ok() || s.code() == StatusCode::kPermissionDenied || s.code() == StatusCode::kNotFound ||
      s.code() == StatusCode::kInvalidArgument) {
    return s;
  }
  return Status::Unavailable(s.message());
}

}  // namespace

Status UploadPrepared(const PrepareResult& result, storage::ObjectStore& store,
                      std::string prefix) {
  if (!prefix.empty() && prefix.back() != '/') prefix += '/';
  const fs::path dir = fs::path(result.manifest_path).parent_path();
  std::set<std::string> names;
  auto upload = [&](const std::string& name) -> Status {
    KILN_ASSIGN_OR_RETURN(std::string bytes, ReadFile((dir / name).string()));
    auto writer = store.NewWriter(prefix + name);
    if (!writer.ok()) return StoreError(writer.status());
    KILN_RETURN_IF_ERROR(StoreError((*writer)->Append(bytes)));
    return StoreError((*writer)->Commit());
  };
  for (const ManifestSplit* split : {&result.manifest.train, &result.manifest.val}) {
    for (const ManifestShard& shard : split->shards) {
      KILN_RETURN_IF_ERROR(upload(shard.file));
      names.insert(shard.file);
    }
  }
  KILN_RETURN_IF_ERROR(upload(kManifestFileName));  // Last: it names the shards above.
  static const std::regex kShardFile("(train|val)_[0-9]{6,}\\.bin");
  auto listed = store.List(prefix);
  if (!listed.ok()) return StoreError(listed.status());
  for (const auto& o : *listed) {
    const std::string name = o.key.substr(prefix.size());
    if (std::regex_match(name, kShardFile) && !names.contains(name)) {
      KILN_RETURN_IF_ERROR(StoreError(store.Delete(o.key)));
    }
  }
  return Status::Ok();
}

}  // namespace kiln::data
