// Fuzzes reading kiln checkpoints (worker/train/checkpoint.h): the bytes as
// a checkpoint file that serve, eval and convert load with its own shape
// (worker/train/load_model.h), and as the newest checkpoint of a training
// run that resumes into a model of a fixed shape (RestoreLatestCheckpoint);
// also as the checkpoint fence beside them and the --fence token
// (worker/train/fence.h).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/scratch_file.h"
#include "worker/model/gpt.h"
#include "worker/train/checkpoint.h"
#include "worker/train/fence.h"
#include "worker/train/load_model.h"

namespace {

// The shape of the seed corpus's checkpoints (fuzz/make_seeds.py).
kiln::model::Gpt<float> SeedShapedModel() {
  kiln::model::GptConfig c;
  c.max_seq_len = 8;
  c.vocab_size = 60;
  c.padded_vocab_size = 64;
  c.num_layers = 1;
  c.num_heads = 2;
  c.channels = 4;
  auto m = kiln::model::Gpt<float>::Create(c, 1);
  if (!m.ok()) std::abort();
  return std::move(*m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::fuzz::ScratchFile file("step-00000001.ckpt");
  static kiln::model::Gpt<float> model = SeedShapedModel();
  file.Write(data, size);
  // Any Status is a fine answer: only crashes, leaks, hangs and huge
  // allocations count.
  auto loaded = kiln::train::LoadModel(file.path(), "", [](const std::string&) {});
  if (loaded.ok() && loaded->format != "kiln" && loaded->format != "llm.c") __builtin_trap();
  auto restored =
      kiln::train::RestoreLatestCheckpoint(file.dir(), model, [](const std::string&) {});
  if (restored.ok() && !restored->has_value()) __builtin_trap();  // There is a file.
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto fence = kiln::train::ParseFence(text, "fence.json");
  if (fence.ok()) {
    // What parses encodes and parses back the same.
    auto again = kiln::train::ParseFence(kiln::train::EncodeFence(*fence), "again");
    if (!again.ok() || !(again->holder == fence->holder) || again->base_step != fence->base_step) {
      __builtin_trap();
    }
  }
  (void)kiln::train::ParseFenceToken(text);
  return 0;
}
