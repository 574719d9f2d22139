// Times one checkpoint of a GPT-2 124M model written to and restored from a
// CheckpointStore (worker/train/checkpoint_store.h): a directory or an
// s3://bucket/prefix (S3 settings from the AWS_* environment). Prints one
// JSON line per store: bytes, write seconds (hashing + upload), restore
// seconds (download + verification + load into the model) and, for S3, the
// download alone. Run by bench/s3_checkpoint_bench.sh.
// Usage: checkpoint_store_bench LOCATION...
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"
#include "worker/train/checkpoint_store.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int Fail(const kiln::Status& s) {
  std::fprintf(stderr, "checkpoint_store_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: checkpoint_store_bench LOCATION...\n");
    return 2;
  }
  kiln::model::GptConfig c;  // GPT-2 124M.
  c.num_layers = 12;
  c.num_heads = 12;
  c.channels = 768;
  c.max_seq_len = 1024;
  c.vocab_size = 50257;
  c.padded_vocab_size = 50304;
  auto model = kiln::model::Gpt<float>::Create(c, 1);
  if (!model.ok()) return Fail(model.status());
  for (int i = 1; i < argc; ++i) {
    const std::string location = argv[i];
    auto store = kiln::train::OpenCheckpointStore(location);
    if (!store.ok()) return Fail(store.status());
    auto t = Clock::now();
    auto where = (*store)->Write(*model, {.step = 1, .position = {}, .seed = 1}, 1);
    if (!where.ok()) return Fail(where.status());
    const double write_s = Since(t);
    t = Clock::now();
    auto restored = (*store)->RestoreLatest(
        *model, [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); });
    if (!restored.ok()) return Fail(restored.status());
    const double restore_s = Since(t);
    nlohmann::json row = {{"location", location},
                          {"object", *where},
                          {"parameters", model->num_parameters()},
                          {"writeSeconds", write_s},
                          {"restoreSeconds", restore_s}};
    if (kiln::storage::IsS3Uri(*where)) {
      auto opened = kiln::storage::OpenS3Store(*where);
      if (!opened.ok()) return Fail(opened.status());
      t = Clock::now();
      auto bytes = opened->store->Get(opened->key);
      if (!bytes.ok()) return Fail(bytes.status());
      row["downloadSeconds"] = Since(t);
      row["bytes"] = bytes->size();
    }
    std::printf("%s\n", row.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}
