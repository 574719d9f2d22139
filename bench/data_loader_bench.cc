// Benchmark: DataLoader throughput over the shards of a prepared split (shard
// loads included: a split with many small shards reloads each one per epoch).
// Prints one JSON line. Prepare the data first, e.g.
//   kiln-worker prepare --input /usr/share/games/fortunes --output /tmp/fortunes
// Usage: data_loader_bench MANIFEST BATCH SEQ_LEN STEPS [WORLD RANK]
#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/data/loader.h"

int main(int argc, char** argv) {
  if (argc != 5 && argc != 7) {
    std::fprintf(stderr, "usage: %s MANIFEST BATCH SEQ_LEN STEPS [WORLD RANK]\n", argv[0]);
    return 2;
  }
  kiln::data::LoaderOptions options{.batch_size = std::stoi(argv[2]),
                                    .seq_len = std::stoi(argv[3])};
  const long steps = std::stol(argv[4]);
  if (argc == 7) {
    options.world_size = std::stoi(argv[5]);
    options.rank = std::stoi(argv[6]);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto loader = kiln::data::DataLoader::OpenSplit(argv[1], "train", options);
  if (!loader.ok()) return std::fprintf(stderr, "%s\n", loader.status().ToString().c_str()), 1;
  const auto t1 = std::chrono::steady_clock::now();
  uint64_t checksum = 0;  // Keeps the copies from being optimized away.
  for (long i = 0; i < steps; ++i) {
    auto batch = loader->Next();
    if (!batch.ok()) return std::fprintf(stderr, "%s\n", batch.status().ToString().c_str()), 1;
    checksum += uint64_t{batch->inputs.back()} + batch->targets.front();
  }
  const auto t2 = std::chrono::steady_clock::now();
  const double open_s = std::chrono::duration<double>(t1 - t0).count();
  const double run_s = std::chrono::duration<double>(t2 - t1).count();
  const double rank_tokens = static_cast<double>(steps) * options.batch_size * options.seq_len;
  nlohmann::json out = {{"manifest", argv[1]},
                        {"batch", options.batch_size},
                        {"seqLen", options.seq_len},
                        {"world", options.world_size},
                        {"rank", options.rank},
                        {"steps", steps},
                        {"epochsReached", loader->position().epoch},
                        {"openSeconds", open_s},
                        {"seconds", run_s},
                        {"stepsPerSecond", static_cast<double>(steps) / run_s},
                        {"rankTokensPerSecond", rank_tokens / run_s},
                        {"checksum", checksum}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
