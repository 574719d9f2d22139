#include "worker/train/object_checkpoint_store.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "worker/storage/s3_signer.h"

namespace kiln::train {
namespace {

using nlohmann::json;

constexpr const char* kManifestSuffix = ".manifest.json";
constexpr const char* kDataSuffix = ".ckpt";
constexpr const char* kManifestKind = "kiln.dev/checkpoint-manifest";
constexpr const char* kFenceName = "fence.json";

// "step-00000100" from ".../step-00000100.manifest.json" or ".ckpt"; empty
// when `key` is neither.
std::string Stem(const std::string& key, const std::string& suffix) {
  const std::string name = key.substr(key.find_last_of('/') + 1);
  if (name.rfind("step-", 0) != 0 || !name.ends_with(suffix)) return "";
  const std::string digits = name.substr(5, name.size() - 5 - suffix.size());
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return "";
  return name.substr(0, name.size() - suffix.size());
}

// Newest first: zero-padded steps sort as numbers when of equal length.
bool Newer(const std::string& a, const std::string& b) {
  return a.size() != b.size() ? a.size() > b.size() : a > b;
}

}  // namespace

ObjectCheckpointStore::ObjectCheckpointStore(std::shared_ptr<storage::ObjectStore> store,
                                             std::string prefix)
    : store_(std::move(store)), prefix_(std::move(prefix)) {
  if (!prefix_.empty() && prefix_.back() != '/') prefix_ += '/';
}

bool ObjectCheckpointStore::Own(const std::string& key) const {
  return key.find('/', prefix_.size()) == std::string::npos;
}

std::string ObjectCheckpointStore::DataName(const std::string& manifest_key) {
  return Stem(manifest_key, kManifestSuffix) + kDataSuffix;
}

StatusOr<std::string> ObjectCheckpointStore::Write(model::Gpt<float>& model,
                                                   const CheckpointState& state, int keep) {
  const std::string header = EncodeCheckpointHeader(model, state);
  const std::string name = CheckpointFileName(state.step);
  const std::string data_key = prefix_ + name;
  const std::string manifest_key =
      prefix_ + name.substr(0, name.size() - std::string(kDataSuffix).size()) + kManifestSuffix;
  auto unavailable = [](const Status& s) {
    // Where checkpoints go is the infrastructure's (exit 3), except what
    // retrying cannot fix: refused credentials, a missing bucket.
    if (s.code() == StatusCode::kPermissionDenied || s.code() == StatusCode::kNotFound ||
        s.code() == StatusCode::kInvalidArgument) {
      return s;
    }
    return Status::Unavailable(s.message());
  };

  // The data object first: not visible as a checkpoint without its manifest.
  auto writer = store_->NewWriter(data_key);
  if (!writer.ok()) return unavailable(writer.status());
  uint64_t bytes = header.size();
  if (Status s = (*writer)->Append(header); !s.ok()) return unavailable(s);
  for (std::string_view tensor : CheckpointTensorBytes(model)) {
    if (Status s = (*writer)->Append(tensor); !s.ok()) return unavailable(s);
    bytes += tensor.size();
  }
  if (Status s = (*writer)->Commit(); !s.ok()) return unavailable(s);

  KILN_ASSIGN_OR_RETURN(json parsed, ParseCheckpointHeader(header, store_->Describe(data_key)));
  json manifest = {{"kind", kManifestKind},
                   {"version", 1},
                   {"step", state.step},
                   {"object", name},
                   {"bytes", bytes},
                   {"headerBytes", header.size()},
                   {"headerSha256", storage::Sha256Hex(header)},
                   {"tensors", parsed.at("tensors")}};
  if (Status s = store_->Put(manifest_key, manifest.dump(2) + "\n"); !s.ok()) {
    return unavailable(s);
  }

  // Only now that the new checkpoint is visible: drop the old ones, each
  // manifest before its data, and data objects no manifest names (uploads of
  // a writer that died before its manifest).
  auto listed = store_->List(prefix_);
  if (!listed.ok()) return unavailable(listed.status());
  std::vector<std::string> manifests;
  std::vector<std::string> stems_kept;
  for (const auto& o : *listed) {
    if (Own(o.key) && !Stem(o.key, kManifestSuffix).empty()) manifests.push_back(o.key);
  }
  std::sort(manifests.begin(), manifests.end(), Newer);
  const auto kept = static_cast<size_t>(std::max(keep, 1));
  for (size_t i = 0; i < manifests.size(); ++i) {
    const std::string stem = Stem(manifests[i], kManifestSuffix);
    if (i < kept) {
      stems_kept.push_back(stem);
      continue;
    }
    // Best effort, as for files: a leftover old checkpoint is harmless.
    (void)store_->Delete(manifests[i]);
    (void)store_->Delete(prefix_ + stem + kDataSuffix);
  }
  const std::string newest = Stem(manifest_key, kManifestSuffix);
  for (const auto& o : *listed) {
    const std::string stem = Stem(o.key, kDataSuffix);
    if (!Own(o.key) || stem.empty() || !Newer(newest, stem)) continue;
    if (std::find(stems_kept.begin(), stems_kept.end(), stem) == stems_kept.end()) {
      (void)store_->Delete(o.key);  // Best effort, as above.
    }
  }
  return store_->Describe(data_key);
}

StatusOr<int> ObjectCheckpointStore::DiscardFrom(int64_t step) {
  auto manifests = ListManifests();
  if (!manifests.ok()) return Status::Unavailable(manifests.status().message());
  int discarded = 0;
  for (const std::string& key : *manifests) {
    auto at = CheckpointStepOf(key, kManifestSuffix);
    if (!at || *at < step) continue;
    for (const std::string& gone : {key, prefix_ + DataName(key)}) {
      Status s = store_->Delete(gone);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return Status::Unavailable(s.message());
    }
    ++discarded;
  }
  return discarded;
}

StatusOr<std::vector<std::string>> ObjectCheckpointStore::ListManifests() {
  KILN_ASSIGN_OR_RETURN(auto listed, store_->List(prefix_));
  std::vector<std::string> out;
  for (const auto& o : listed) {
    if (Own(o.key) && !Stem(o.key, kManifestSuffix).empty()) out.push_back(o.key);
  }
  std::sort(out.begin(), out.end(), Newer);
  return out;
}

StatusOr<std::string> ObjectCheckpointStore::FetchVerified(const std::string& manifest_key) {
  const std::string where = store_->Describe(manifest_key);
  auto damaged = [&](const std::string& why) { return Status::DataLoss(where + ": " + why); };
  auto text = store_->Get(manifest_key);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return damaged("manifest vanished");
    return text.status();
  }
  json manifest = json::parse(*text, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object()) return damaged("manifest is not JSON");
  try {
    if (manifest.at("kind") != kManifestKind || manifest.at("version") != 1) {
      return damaged("not a version 1 kiln checkpoint manifest");
    }
    const std::string object = manifest.at("object").get<std::string>();
    if (object != DataName(manifest_key)) {
      return damaged("names the data object \"" + object + "\", want " + DataName(manifest_key));
    }
    const std::string data_key = prefix_ + object;
    auto bytes = store_->Get(data_key);
    if (!bytes.ok()) {
      if (bytes.status().code() == StatusCode::kNotFound) {
        return damaged("its data object " + store_->Describe(data_key) + " is missing");
      }
      return bytes.status();
    }
    const auto want = manifest.at("bytes").get<uint64_t>();
    if (bytes->size() != want) {
      return damaged("the data object holds " + std::to_string(bytes->size()) + " bytes, want " +
                     std::to_string(want));
    }
    const auto header_bytes = manifest.at("headerBytes").get<uint64_t>();
    if (header_bytes > bytes->size() ||
        storage::Sha256Hex(std::string_view(*bytes).substr(0, header_bytes)) !=
            manifest.at("headerSha256").get<std::string>()) {
      return damaged("the data object's header does not match the manifest's SHA-256");
    }
    KILN_ASSIGN_OR_RETURN(json header, ParseCheckpointHeader(*bytes, store_->Describe(data_key)));
    if (header.at("tensors") != manifest.at("tensors")) {
      return damaged("the data object's tensor table differs from the manifest's");
    }
    return std::move(*bytes);
  } catch (const json::exception& e) {
    return damaged(std::string("malformed manifest: ") + e.what());
  }
}

StatusOr<std::optional<CheckpointState>> ObjectCheckpointStore::RestoreAccepted(
    model::Gpt<float>& model, const std::function<void(const std::string&)>& warn,
    const CheckpointFilter& accept) {
  KILN_ASSIGN_OR_RETURN(auto manifests, ListManifests());
  size_t damaged = 0;
  for (const auto& key : manifests) {
    const std::string where = store_->Describe(prefix_ + DataName(key));
    auto bytes = FetchVerified(key);
    Status failed = bytes.status();
    if (bytes.ok()) {
      auto state = ParseCheckpoint(*bytes, where, model);
      if (state.ok()) {
        Status taken = accept ? accept(*state) : Status::Ok();
        if (taken.ok()) return std::optional<CheckpointState>(*state);
        warn("passing over checkpoint " + where + ": " + taken.message());
        continue;
      }
      failed = state.status();
    }
    if (failed.code() != StatusCode::kDataLoss) return failed;
    warn("skipping damaged checkpoint: " + failed.message());
    ++damaged;
  }
  if (damaged == 0) return std::optional<CheckpointState>();
  return Status::DataLoss(NoneTaken(store_->Describe(prefix_), damaged, manifests.size()));
}

StatusOr<std::optional<std::string>> ObjectCheckpointStore::ReadFence() {
  auto text = store_->Get(prefix_ + kFenceName);
  if (text.ok()) return std::optional<std::string>(std::move(*text));
  if (text.status().code() == StatusCode::kNotFound) return std::optional<std::string>();
  return Status::Unavailable(text.status().message());
}

Status ObjectCheckpointStore::WriteFence(const std::string& text) {
  Status s = store_->Put(prefix_ + kFenceName, text);
  return s.ok() ? s : Status::Unavailable(s.message());
}

}  // namespace kiln::train
