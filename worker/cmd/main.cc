// kiln-worker: the training and inference engine GPU pods run: it reports
// its build and the GPUs it sees, prepares training data, trains, serves,
// evaluates and converts models. Exit codes follow worker/exit_codes.h, the
// contract the operator reads.
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/version.h"
#include "kernels/device.h"
#include "worker/cmd/convert_command.h"
#include "worker/cmd/eval_command.h"
#include "worker/cmd/serve_command.h"
#include "worker/cmd/train_command.h"
#include "worker/data/prepare.h"
#include "worker/exit_codes.h"

namespace {

using kiln::worker::ExitCode;
using kiln::worker::ToInt;

constexpr const char* kUsage =
    "Usage: kiln-worker [--help] [--version] <command> [options]\n"
    "\n"
    "The kiln training and inference engine.\n"
    "\n"
    "Commands:\n"
    "  devices     Print the visible GPUs as JSON and probe each with a test kernel.\n"
    "  prepare     Tokenize text files into train and validation token shards\n"
    "              ('kiln-worker prepare --help' shows its options).\n"
    "  train       Train the GPT on the CPU or GPUs from prepared shards\n"
    "              ('kiln-worker train --help' shows its options).\n"
    "  serve       Serve a checkpoint over an OpenAI-compatible HTTP API\n"
    "              ('kiln-worker serve --help' shows its options).\n"
    "  eval        Measure loss, perplexity and exact-match accuracy of a checkpoint\n"
    "              or a running server ('kiln-worker eval --help').\n"
    "  convert     Convert between kiln checkpoints and llm.c model files\n"
    "              ('kiln-worker convert --help').\n"
    "\n"
    "Options:\n"
    "  --help      Show this help and exit.\n"
    "  --version   Print the version and the GPU libraries linked in, and exit.\n"
    "\n"
    "Exit codes (the operator retries only the retryable ones):\n"
    "  0  Success.\n"
    "  1  InternalError: something unexpected broke. Retryable.\n"
    "  2  ConfigurationError: bad flags or configuration. Not retryable.\n"
    "  3  InfrastructureFault: a GPU failed its probe, storage is unavailable. Retryable.\n"
    "  4  CommunicationTimeout: a peer or collective did not answer in time. Retryable.\n"
    "  5  NumericsFault: training diverged (NaN/Inf). Retryable from a checkpoint.\n"
    "  6  DataError: training data is missing or malformed. Not retryable.\n"
    "  7  QualityGateFailed: eval measured the model below a quality gate.\n";

constexpr const char* kPrepareUsage =
    "Usage: kiln-worker prepare --input PATH [--input PATH ...] --output DIR [options]\n"
    "\n"
    "Tokenizes text with the byte tokenizer (tokens 0-255 are bytes, 256 ends each\n"
    "document) into DIR/train_000000.bin ..., DIR/val_000000.bin ... (llm.c token\n"
    "shards) and DIR/manifest.json. The same inputs always give the same files.\n"
    "\n"
    "Options (each also as --name=value):\n"
    "  --input PATH        A text file, or a directory whose files are read in name\n"
    "                      order (not recursing; hidden and .dat files skipped).\n"
    "                      Repeatable; at least one.\n"
    "  --output DIR        Where the shards and manifest go; created when missing.\n"
    "                      Shards of an earlier run that are not rewritten are removed.\n"
    "  --val-fraction F    Share of documents in the validation split, 0 to 0.5\n"
    "                      (default 0.01; at least one document when F > 0).\n"
    "  --shard-tokens N    Tokens per shard file (default 100000000).\n"
    "  --format FORMAT     How files split into documents: fortunes (at lines holding\n"
    "                      only '%'), text (a file is one document) or auto (default:\n"
    "                      fortunes for a file with such a line, else text).\n"
    "  --help              Show this help and exit.\n"
    "\n"
    "Prints one summary line on success. Exit codes: 0 success, 2 bad flags,\n"
    "3 the output cannot be written, 6 an input is missing, unreadable or holds\n"
    "no documents.\n";

int PrintVersion() {
  std::printf("%s\n", kiln::VersionLine("kiln-worker").c_str());
  if (kiln::gpu::BuiltWithCuda()) {
    auto v = kiln::gpu::GetLibraryVersions();
    std::printf("cuda-runtime %s, cuda-driver %s, cublas %s, nccl %s\n", v.cuda_runtime.c_str(),
                v.cuda_driver.empty() ? "none" : v.cuda_driver.c_str(), v.cublas.c_str(),
                v.nccl.c_str());
  }
  return ToInt(ExitCode::kSuccess);
}

int Devices() {
  nlohmann::json out = {{"builtWithCuda", kiln::gpu::BuiltWithCuda()},
                        {"devices", nlohmann::json::array()}};
  auto devices = kiln::gpu::ListDevices();
  ExitCode rc = ExitCode::kSuccess;
  if (!devices.ok()) {
    out["error"] = devices.status().ToString();
  } else {
    for (const auto& d : *devices) {
      kiln::Status probe = kiln::gpu::ProbeDevice(d.index);
      if (!probe.ok()) rc = ExitCode::kInfrastructureFault;
      out["devices"].push_back({{"index", d.index},
                                {"name", d.name},
                                {"computeCapability", std::to_string(d.compute_major) + "." +
                                                          std::to_string(d.compute_minor)},
                                {"multiprocessors", d.multiprocessors},
                                {"memoryBytes", d.total_memory_bytes},
                                {"pciBusId", d.pci_bus_id},
                                {"probe", probe.ToString()}});
    }
  }
  std::printf("%s\n", out.dump(2).c_str());
  return ToInt(rc);
}

int PrepareUsageError(const std::string& why) {
  std::fprintf(stderr, "kiln-worker prepare: %s\n\nRun 'kiln-worker prepare --help' for usage.\n",
               why.c_str());
  return ToInt(ExitCode::kConfigurationError);
}

std::string Plural(int64_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

int Prepare(int argc, char** argv) {
  kiln::data::PrepareOptions options;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kPrepareUsage, stdout);
      return ToInt(ExitCode::kSuccess);
    }
    if (!arg.starts_with("--")) return PrepareUsageError("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (name != "input" && name != "output" && name != "val-fraction" && name != "shard-tokens" &&
        name != "format") {
      return PrepareUsageError("unknown flag '--" + name + "'");
    }
    if (!has_value) {
      if (i + 1 >= argc) return PrepareUsageError("flag --" + name + " needs a value");
      value = argv[++i];
    }
    if (name == "input") {
      options.inputs.push_back(value);
    } else if (name == "output") {
      options.output_dir = value;
    } else if (name == "val-fraction") {
      char* end = nullptr;
      double f = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(f)) {
        return PrepareUsageError("--val-fraction: '" + value + "' is not a number");
      }
      if (f < 0 || f > 0.5) {
        return PrepareUsageError("--val-fraction must be in [0, 0.5], got " + value);
      }
      options.val_fraction = f;
    } else if (name == "shard-tokens") {
      int64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size()) {
        return PrepareUsageError("--shard-tokens: '" + value + "' is not a whole number");
      }
      options.shard_tokens = n;
    } else {
      auto format = kiln::data::ParseInputFormat(value);
      if (!format.ok()) return PrepareUsageError("--format: " + format.status().message());
      options.format = *format;
    }
  }
  if (options.inputs.empty()) return PrepareUsageError("missing --input");
  if (options.output_dir.empty()) return PrepareUsageError("missing --output");
  if (kiln::Status valid = kiln::data::ValidatePrepareOptions(options); !valid.ok()) {
    return PrepareUsageError(valid.message());
  }

  const auto start = std::chrono::steady_clock::now();
  auto result = kiln::data::Prepare(options);
  if (!result.ok()) {
    ExitCode rc = kiln::worker::ExitCodeFor(result.status());
    std::fprintf(stderr, "kiln-worker prepare: %s (%s)\n", result.status().message().c_str(),
                 kiln::worker::ExitCodeName(rc));
    return ToInt(rc);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& m = result->manifest;
  std::printf("prepared %s from %s: train %s, %s in %s; val %s, %s in %s; wrote %s in %.2f s\n",
              Plural(m.train.documents + m.val.documents, "document").c_str(),
              Plural(static_cast<int64_t>(m.inputs.size()), "file").c_str(),
              Plural(m.train.documents, "document").c_str(),
              Plural(m.train.tokens, "token").c_str(),
              Plural(static_cast<int64_t>(m.train.shards.size()), "shard").c_str(),
              Plural(m.val.documents, "document").c_str(), Plural(m.val.tokens, "token").c_str(),
              Plural(static_cast<int64_t>(m.val.shards.size()), "shard").c_str(),
              result->manifest_path.c_str(), seconds);
  return ToInt(ExitCode::kSuccess);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return ToInt(ExitCode::kConfigurationError);
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return ToInt(ExitCode::kSuccess);
  }
  if (cmd == "--version") return PrintVersion();
  if (cmd == "devices" && argc == 2) return Devices();
  if (cmd == "prepare") return Prepare(argc, argv);
  if (cmd == "train") return kiln::worker::RunTrainCommand(argc, argv);
  if (cmd == "serve") return kiln::worker::RunServeCommand(argc, argv);
  if (cmd == "eval") return kiln::worker::RunEvalCommand(argc, argv);
  if (cmd == "convert") return kiln::worker::RunConvertCommand(argc, argv);
  std::fprintf(stderr, "kiln-worker: unknown command or argument '%s'\n\n%s",
               cmd == "devices" ? argv[2] : cmd.c_str(), kUsage);
  return ToInt(ExitCode::kConfigurationError);
}
