#include "worker/cmd/convert_command.h"

#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/cmd/flags.h"
#include "worker/exit_codes.h"
#include "worker/train/checkpoint.h"
#include "worker/train/llmc_checkpoint.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

constexpr const char* kUsage =
    "Usage: kiln-worker convert --input PATH --output PATH [--to kiln|llmc] [--bf16]\n"
    "\n"
    "Converts a model between kiln's checkpoints and llm.c's GPT-2 model files\n"
    "(gpt2_124M.bin and the like; the same tensors in the same order).\n"
    "\n"
    "  --input PATH     A kiln checkpoint file, a kiln checkpoint directory (its\n"
    "                   newest intact checkpoint) or an llm.c model file.\n"
    "  --output PATH    llmc: the model file to write. kiln: a checkpoint directory\n"
    "                   (created; it must hold no checkpoints), which then holds a\n"
    "                   step-0 checkpoint with zero AdamW moments: serve and eval\n"
    "                   read it, and 'train --checkpoint-dir' there starts from\n"
    "                   these weights (the model flags must give the same shape).\n"
    "  --to FORMAT      kiln or llmc (default: the other format than the input's).\n"
    "  --bf16           llmc: write bf16 parameters (llm.c's version 5) instead of\n"
    "                   float32 (version 3, what llm.c's CPU trainer reads).\n"
    "\n"
    "Prints one JSON line. Exit codes: 0 success, 2 bad flags or an output\n"
    "directory that already holds checkpoints, 3 the output cannot be written,\n"
    "6 the input is missing, damaged or not a model.\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-worker convert: %s\n\nRun 'kiln-worker convert --help' for usage.\n",
               why.c_str());
  return ToInt(ExitCode::kConfigurationError);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker convert: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

}  // namespace

int RunConvertCommand(int argc, char** argv) {
  std::string input, output, to;
  bool bf16 = false;
  FlagSet flags;
  flags.String("input", &input);
  flags.String("output", &output);
  flags.String("to", &to);
  flags.Bool("bf16", &bf16);
  if (std::string error = flags.Parse(argc, argv, 2); !error.empty()) {
    if (error == "help") {
      std::fputs(kUsage, stdout);
      return ToInt(ExitCode::kSuccess);
    }
    return Usage(error);
  }
  if (input.empty() || output.empty()) return Usage("--input and --output are required");
  if (!to.empty() && to != "kiln" && to != "llmc") {
    return Usage("--to: 'kiln' or 'llmc', not '" + to + "'");
  }
  auto loaded = train::LoadModel(input, "", [](const std::string& message) {
    std::fprintf(stderr, "kiln-worker convert: %s\n", message.c_str());
  });
  if (!loaded.ok()) {
    // A shape kiln cannot build is a property of the input file: data error.
    if (loaded.status().code() == StatusCode::kInvalidArgument) {
      return Fail(Status::DataLoss(loaded.status().message()));
    }
    return Fail(loaded.status());
  }
  if (to.empty()) to = loaded->format == "kiln" ? "llmc" : "kiln";
  if (bf16 && to != "llmc") return Usage("--bf16 applies to --to llmc");

  if (to == "llmc") {
    const auto precision = bf16 ? train::LlmcPrecision::kBf16 : train::LlmcPrecision::kFloat32;
    if (Status s = train::WriteLlmcCheckpoint(output, loaded->model, precision); !s.ok()) {
      return Fail(s.code() == StatusCode::kNotFound ? Status::Unavailable(s.message()) : s);
    }
  } else {
    std::error_code ec;
    std::filesystem::create_directories(output, ec);
    if (ec) return Fail(Status::Unavailable("cannot create " + output + ": " + ec.message()));
    auto existing = train::ListCheckpoints(output);
    if (!existing.ok()) return Fail(existing.status());
    if (!existing->empty()) {
      return Usage(output + " already holds checkpoints (" + existing->front() +
                   "); convert into an empty directory");
    }
    auto written = train::WriteCheckpoint(output, loaded->model, {.step = 0}, 1);
    if (!written.ok()) return Fail(written.status());
    output = *written;
  }
  std::printf("%s\n", nlohmann::json{{"event", "converted"},
                                     {"input", loaded->path},
                                     {"inputFormat", loaded->format},
                                     {"output", output},
                                     {"outputFormat", to == "llmc" && bf16 ? "llmc-bf16" : to},
                                     {"parameters", loaded->model.num_parameters()}}
                          .dump()
                          .c_str());
  return ToInt(ExitCode::kSuccess);
}

}  // namespace kiln::worker
