#include "worker/train/fence.h"

#include <charconv>
#include <memory>

#include <nlohmann/json.hpp>

#include "base/json_integer.h"

namespace kiln::train {
namespace {

using nlohmann::json;

constexpr const char* kFenceKind = "kiln.dev/checkpoint-fence";

std::string Describe(const CheckpointWriter& w) {
  return "job " + w.job + " attempt " + std::to_string(w.attempt);
}

}  // namespace

Status SupersededError(const std::string& why) {
  return Status::FailedPrecondition("superseded: " + why)
      .WithDetail(std::make_shared<Superseded>());
}

std::string EncodeFence(const Fence& fence) {
  return json{{"kind", kFenceKind},
              {"version", 1},
              {"job", fence.holder.job},
              {"attempt", fence.holder.attempt},
              {"baseStep", fence.base_step}}
             .dump() +
         "\n";
}

StatusOr<Fence> ParseFence(std::string_view text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::DataLoss(where + ": fence is not JSON");
  try {
    if (j.at("kind") != kFenceKind || j.at("version") != 1) {
      return Status::DataLoss(where + ": not a version 1 kiln checkpoint fence");
    }
    return Fence{{j.at("job").get<std::string>(), IntegerAt<int64_t>(j, "attempt")},
                 IntegerAt<int64_t>(j, "baseStep")};
  } catch (const json::exception& e) {
    return Status::DataLoss(where + ": malformed fence: " + e.what());
  }
}

StatusOr<CheckpointWriter> ParseFenceToken(const std::string& text) {
  const size_t colon = text.rfind(':');
  CheckpointWriter w;
  if (colon == std::string::npos || colon == 0) {
    return Status::InvalidArgument("--fence \"" + text + "\" is not UID:ATTEMPT");
  }
  w.job = text.substr(0, colon);
  const char* first = text.data() + colon + 1;
  const char* last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, w.attempt);
  if (ec != std::errc() || end != last || first == last || w.attempt < 0) {
    return Status::InvalidArgument("--fence \"" + text +
                                   "\": the attempt after ':' is not a whole number >= 0");
  }
  return w;
}

FenceAction DecideFence(const std::optional<Fence>& current, const CheckpointWriter& mine,
                        bool starting) {
  if (!current) return FenceAction::kClaim;
  const CheckpointWriter& holder = current->holder;
  if (holder.job != mine.job) return starting ? FenceAction::kClaim : FenceAction::kStop;
  if (holder.attempt > mine.attempt) return FenceAction::kStop;
  return holder.attempt == mine.attempt ? FenceAction::kHold : FenceAction::kClaim;
}

Status CheckWrittenUnder(const Fence& fence, const CheckpointState& state) {
  if (state.step <= fence.base_step) return Status::Ok();
  if (state.writer && *state.writer == fence.holder) return Status::Ok();
  return Status::FailedPrecondition(
      "step " + std::to_string(state.step) + " is newer than the fence's base step " +
      std::to_string(fence.base_step) + " and was written by " +
      (state.writer ? Describe(*state.writer) : std::string("a run without a fence token")) +
      ", not by the holder (" + Describe(fence.holder) + "): a gang that had lost the fence");
}

StatusOr<std::optional<Fence>> ReadFenceFor(CheckpointStore& store, const CheckpointWriter& mine,
                                            bool starting) {
  KILN_ASSIGN_OR_RETURN(std::optional<std::string> text, store.ReadFence());
  std::optional<Fence> current;
  if (text) {
    KILN_ASSIGN_OR_RETURN(Fence parsed, ParseFence(*text, "the checkpoint fence"));
    current = std::move(parsed);
  }
  if (DecideFence(current, mine, starting) == FenceAction::kStop) {
    return SupersededError(Describe(current->holder) + " holds the checkpoints; this gang is " +
                           Describe(mine));
  }
  return current;
}

Status KeepFence(CheckpointStore& store, const CheckpointWriter& mine, int64_t base_step) {
  KILN_ASSIGN_OR_RETURN(std::optional<Fence> current, ReadFenceFor(store, mine, false));
  if (DecideFence(current, mine, false) == FenceAction::kHold) return Status::Ok();
  return store.WriteFence(EncodeFence({mine, base_step}));
}

}  // namespace kiln::train
