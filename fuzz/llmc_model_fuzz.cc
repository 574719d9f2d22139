// Fuzzes reading llm.c model files (worker/train/llmc_checkpoint.h), as
// kiln-worker convert, serve and eval do.
#include <cstdint>
#include <string>

#include "fuzz/scratch_file.h"
#include "worker/train/llmc_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::fuzz::ScratchFile file("model.bin");
  file.Write(data, size);
  if (!kiln::train::IsLlmcCheckpoint(file.path())) return 0;
  // Any Status is a fine answer: only crashes, leaks, hangs and huge
  // allocations count.
  auto model = kiln::train::ReadLlmcCheckpoint(file.path());
  if (model.ok() && model->num_parameters() == 0) __builtin_trap();
  return 0;
}
