// Fuzzes reading token shards (worker/data/shard.h): the count from the
// header and size, and the whole shard with and without a vocabulary.
#include <cstdint>

#include "fuzz/scratch_file.h"
#include "worker/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::fuzz::ScratchFile file("shard_000000.bin");
  file.Write(data, size);
  auto count = kiln::data::ShardTokenCount(file.path());
  auto tokens = kiln::data::ReadShard(file.path());
  // The two agree: a shard that reads has the tokens its header counts.
  if (tokens.ok() && (!count.ok() || *count != static_cast<int64_t>(tokens->size()))) {
    __builtin_trap();
  }
  auto in_vocab = kiln::data::ReadShard(file.path(), 257);
  if (in_vocab.ok()) {
    for (uint16_t t : *in_vocab) {
      if (t >= 257) __builtin_trap();
    }
  }
  return 0;
}
