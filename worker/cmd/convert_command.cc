#include "worker/cmd/convert_command.h"

#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "base/flags.h"
#include "worker/exit_codes.h"
#include "worker/train/checkpoint.h"
#include "worker/train/llmc_checkpoint.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

constexpr const char* kSynopsis =
    "Usage: kiln-worker convert --input PATH --output PATH [--to kiln|llmc] [--bf16]\n"
    "\n"
    "Converts a model between kiln's checkpoints and llm.c's GPT-2 model files\n"
    "(gpt2_124M.bin and the like; the same tensors in the same order).\n";

constexpr const char* kEpilogue =
    "Prints one JSON line. Exit codes: 0 success, 2 bad flags or an output\n"
    "directory that already holds checkpoints, 3 the output cannot be written,\n"
    "6 the input is missing, damaged or not a model.\n";

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker convert: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

}  // namespace

int RunConvertCommand(int argc, char** argv) {
  std::string input, output, to;
  bool bf16 = false;
  FlagSet flags("kiln-worker convert", kSynopsis, kEpilogue);
  flags
      .String("input", &input,
              "A kiln checkpoint file, a kiln checkpoint directory (its newest intact "
              "checkpoint) or an llm.c model file.")
      .Metavar("PATH");
  flags
      .String("output", &output,
              "llmc: the model file to write. kiln: a checkpoint directory (created; it must "
              "hold no checkpoints), which then holds a step-0 checkpoint with zero AdamW "
              "moments: serve and eval read it, and 'train --checkpoint-dir' there starts from "
              "these weights (the model flags must give the same shape).")
      .Metavar("PATH");
  flags.Enum("to", &to, {"kiln", "llmc"}, "The output's format.")
      .DefaultText("the other format than the input's");
  flags.Bool("bf16", &bf16,
             "llmc: write bf16 parameters (llm.c's version 5) instead of float32 (version 3, "
             "what llm.c's CPU trainer reads).");
  if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
  if (input.empty() || output.empty()) {
    return flags.UsageError("--input and --output are required");
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
  if (bf16 && to != "llmc") return flags.UsageError("--bf16 applies to --to llmc");

  if (to == "llmc") {
    const auto precision = bf16 ? train::LlmcPrecision::kBf16 : train::LlmcPrecision::kFloat32;
    if (Status s = train::WriteLlmcCheckpoint(output, loaded->model, precision); !s.ok()) {
      return Fail(s.code() == StatusCode::kNotFound ? Status::Unavailable(s.message()) : s);
    }
  } else {
    std::error_code ec;
    std::filesystem::create_directories(output, ec);
    // Where output goes is the infrastructure's: Unavailable (exit 3) whatever
    // the errno, not ErrnoStatus's code (base/errno_status.h).
    if (ec) return Fail(Status::Unavailable("cannot create " + output + ": " + ec.message()));
    auto existing = train::ListCheckpoints(output);
    if (!existing.ok()) return Fail(existing.status());
    if (!existing->empty()) {
      return flags.UsageError(output + " already holds checkpoints (" + existing->front() +
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
