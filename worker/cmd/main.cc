// kiln-worker: the training and inference engine GPU pods run: it reports
// its build and the GPUs it sees, prepares training data, trains, serves,
// evaluates and converts models. Exit codes follow worker/exit_codes.h, the
// contract the operator reads.
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/flags.h"
#include "base/version.h"
#include "kernels/device.h"
#include "worker/cmd/convert_command.h"
#include "worker/cmd/eval_command.h"
#include "worker/cmd/serve_command.h"
#include "worker/cmd/train_command.h"
#include "worker/data/prepare.h"
#include "worker/data/shard.h"
#include "worker/exit_codes.h"
#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"

namespace {

using kiln::worker::ExitCode;
using kiln::worker::ToInt;

constexpr const char* kSynopsis =
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
    "              ('kiln-worker convert --help').\n";

constexpr const char* kEpilogue =
    "Exit codes (the operator retries only the retryable ones):\n"
    "  0  Success.\n"
    "  1  InternalError: something unexpected broke. Retryable.\n"
    "  2  ConfigurationError: bad flags or configuration. Not retryable.\n"
    "  3  InfrastructureFault: a GPU failed its probe, storage is unavailable. Retryable.\n"
    "  4  CommunicationTimeout: a peer or collective did not answer in time. Retryable.\n"
    "  5  NumericsFault: training diverged (NaN/Inf). Retryable from a checkpoint.\n"
    "  6  DataError: training data is missing or malformed. Not retryable.\n"
    "  7  QualityGateFailed: eval measured the model below a quality gate.\n"
    "  8  Superseded: train found a newer attempt holding the checkpoints' fence\n"
    "     and stopped without writing. Not retryable.\n";

constexpr const char* kPrepareSynopsis =
    "Usage: kiln-worker prepare --input PATH [--input PATH ...] --output DIR [options]\n"
    "\n"
    "Tokenizes text with the byte tokenizer (tokens 0-255 are bytes, 256 ends each\n"
    "document) into DIR/train_000000.bin ..., DIR/val_000000.bin ... (llm.c token\n"
    "shards) and DIR/manifest.json. The same inputs always give the same files.\n";

constexpr const char* kPrepareEpilogue =
    "Prints one summary line on success. Exit codes: 0 success, 2 bad flags,\n"
    "3 the output cannot be written, 6 an input is missing, unreadable or holds\n"
    "no documents.\n";

static_assert(kiln::kUsageExitCode == ToInt(ExitCode::kConfigurationError));

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

std::string Plural(int64_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

int Prepare(int argc, char** argv) {
  kiln::data::PrepareOptions options;
  std::string format = "auto";
  kiln::FlagSet flags("kiln-worker prepare", kPrepareSynopsis, kPrepareEpilogue);
  flags
      .Strings("input", &options.inputs,
               "A text file, or a directory whose files are read in name order (not recursing; "
               "hidden and .dat files skipped). At least one.")
      .Metavar("PATH");
  flags
      .String("output", &options.output_dir,
              "Where the shards and manifest go; created when missing. Shards of an earlier run "
              "that are not rewritten are removed. An s3://bucket/prefix is prepared in $TMPDIR, "
              "then uploaded (the manifest last).")
      .Metavar("DIR|URI");
  flags.Double("val-fraction", &options.val_fraction, 0, 0.5,
               "Share of documents in the validation split (at least one document when F > 0).");
  flags.Int("shard-tokens", &options.shard_tokens, int64_t{1}, kiln::data::kMaxShardTokens,
            "Tokens per shard file.");
  flags.Enum("format", &format, {"auto", "fortunes", "text"},
             "How files split into documents: fortunes (at lines holding only '%'), text (a "
             "file is one document) or auto (fortunes for a file with such a line, else text).");
  if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
  if (options.inputs.empty()) return flags.UsageError("missing --input");
  if (options.output_dir.empty()) return flags.UsageError("missing --output");
  auto parsed_format = kiln::data::ParseInputFormat(format);
  if (!parsed_format.ok()) return flags.UsageError("--format: " + parsed_format.status().message());
  options.format = *parsed_format;
  if (kiln::Status valid = kiln::data::ValidatePrepareOptions(options); !valid.ok()) {
    return flags.UsageError(valid.message());
  }

  // An s3:// output is prepared in a temporary folder, then uploaded.
  const std::string output = options.output_dir;
  std::optional<kiln::storage::OpenedStore> s3;
  std::string staging;
  if (kiln::storage::IsS3Uri(output)) {
    auto opened = kiln::storage::OpenS3Store(output);
    if (!opened.ok()) {
      ExitCode rc = kiln::worker::ExitCodeFor(opened.status());
      std::fprintf(stderr, "kiln-worker prepare: %s (%s)\n", opened.status().message().c_str(),
                   kiln::worker::ExitCodeName(rc));
      return ToInt(rc);
    }
    s3 = std::move(*opened);
    std::string tmpl = (std::filesystem::temp_directory_path() / "kiln-prepare-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "kiln-worker prepare: cannot create a staging folder in %s (%s)\n",
                   std::filesystem::temp_directory_path().c_str(),
                   kiln::worker::ExitCodeName(ExitCode::kInfrastructureFault));
      return ToInt(ExitCode::kInfrastructureFault);
    }
    staging = tmpl;
    options.output_dir = staging;
  }

  const auto start = std::chrono::steady_clock::now();
  auto result = kiln::data::Prepare(options);
  if (result.ok() && s3) {
    kiln::Status uploaded = kiln::data::UploadPrepared(*result, *s3->store, s3->key);
    if (uploaded.ok()) {
      result->manifest_path =
          output + (output.back() == '/' ? "" : "/") + kiln::data::kManifestFileName;
    } else {
      result = uploaded;
    }
  }
  if (!staging.empty()) {
    std::error_code ignored;  // Best effort: a leftover staging folder is only disk space.
    std::filesystem::remove_all(staging, ignored);
  }
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
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "devices") {
    kiln::FlagSet flags("kiln-worker devices",
                        "Usage: kiln-worker devices\n\n"
                        "Prints the visible GPUs as JSON and probes each with a test kernel.\n",
                        "Exit codes: 0 every GPU passed its probe, 3 one failed.\n");
    if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
    return Devices();
  }
  if (cmd == "prepare") return Prepare(argc, argv);
  if (cmd == "train") return kiln::worker::RunTrainCommand(argc, argv);
  if (cmd == "serve") return kiln::worker::RunServeCommand(argc, argv);
  if (cmd == "eval") return kiln::worker::RunEvalCommand(argc, argv);
  if (cmd == "convert") return kiln::worker::RunConvertCommand(argc, argv);
  bool version = false;
  kiln::FlagSet flags("kiln-worker", kSynopsis, kEpilogue);
  flags.Bool("version", &version, "Print the version and the GPU libraries linked in, and exit.");
  if (cmd == "help") {
    std::fputs(flags.Usage().c_str(), stdout);
    return ToInt(ExitCode::kSuccess);
  }
  if (argc < 2) {
    std::fputs(flags.Usage().c_str(), stderr);
    return ToInt(ExitCode::kConfigurationError);
  }
  if (!cmd.starts_with("-")) return flags.UsageError("unknown command '" + cmd + "'");
  if (auto exit = flags.ParseOrExit(argc, argv, 1)) return *exit;
  if (version) return PrintVersion();
  return flags.UsageError("no command given");
}
