#include "worker/cmd/eval_command.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/errno_status.h"
#include "base/flags.h"
#include "worker/exit_codes.h"
#include "worker/serve/eval.h"
#include "worker/storage/s3_client.h"
#include "worker/train/fetch_model.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

constexpr const char* kSynopsis =
    "Usage: kiln-worker eval --data EVAL.jsonl (--checkpoint PATH | --server URL) [gates]\n"
    "\n"
    "Measures a model on an evaluation set (JSON Lines: {\"text\": ...} lines are\n"
    "scored for loss; {\"prompt\": ..., \"completion\": ...} lines for the loss of the\n"
    "completion and for exact match of the greedy completion) and prints one JSON\n"
    "object: {\"examples\", \"loss\": {\"tokens\", \"mean\", \"perplexity\"},\n"
    "\"exactMatch\": {\"total\", \"correct\", \"accuracy\", \"failedLines\"}, \"gates\",\n"
    "\"passed\"}.\n";

constexpr const char* kEpilogue =
    "Exit codes: 0 evaluated and every gate passed, 2 bad flags, 3 the server\n"
    "cannot be reached, 6 the evaluation set or checkpoint is missing or malformed,\n"
    "7 a gate was missed (QualityGateFailed).\n";

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker eval: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  std::string data, checkpoint, server, model_name, report_path;
  std::string cache_dir = "/tmp/kiln-models";
  double min_accuracy = 0, max_perplexity = 0, max_loss = 0;
  int samples = 0;
  int64_t seed = 0;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  FlagSet flags("kiln-worker eval", kSynopsis, kEpilogue);
  flags.String("data", &data, "The evaluation set (required).").Metavar("PATH");
  flags
      .String("checkpoint", &checkpoint,
              "A checkpoint file or directory (its newest intact one), an llm.c model "
              "file, or an s3:// URI of either (downloaded into --cache-dir): loss and exact "
              "match.")
      .Metavar("PATH|URI");
  flags.String("cache-dir", &cache_dir, "Where s3:// models are downloaded.").Metavar("DIR");
  flags
      .String("server", &server,
              "A running 'kiln-worker serve' (e.g. http://model:8000): exact match only "
              "(loss needs the weights).")
      .Metavar("URL");
  flags.String("model", &model_name, "The model name to send to the server.").Metavar("NAME");
  flags
      .Int("samples", &samples, 1, std::numeric_limits<int>::max(),
           "Score only N of the set's examples: the first N, or with --seed N chosen at random "
           "(the same ones for every model scored with the same seed).")
      .DefaultText("all");
  flags
      .Int("seed", &seed, int64_t{0}, std::numeric_limits<int64_t>::max(),
           "With --samples: choose the examples at random with this seed.")
      .DefaultText("the first N");
  flags
      .Double("min-accuracy", &min_accuracy, 0, 1, "Gate: exact-match accuracy must be at least X.")
      .DefaultText("no gate");
  flags.Double("max-perplexity", &max_perplexity, 0, kInf, "Gate: perplexity must be at most X.")
      .DefaultText("no gate");
  flags
      .Double("max-loss", &max_loss, 0, kInf, "Gate: mean loss (nats per token) must be at most X.")
      .DefaultText("no gate");
  flags
      .String("report", &report_path,
              "Also write the JSON report to this file, e.g. /dev/termination-log, where the "
              "ModelDeployment controller's quality gate reads it.")
      .Metavar("PATH");
  if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
  if (data.empty()) return flags.UsageError("--data is required");
  if (checkpoint.empty() == server.empty()) {
    return flags.UsageError("give exactly one of --checkpoint and --server");
  }
  auto given = [&](const char* name, double value) {
    return flags.IsSet(name) ? std::optional<double>(value) : std::nullopt;
  };
  const auto gate_accuracy = given("min-accuracy", min_accuracy);
  const auto gate_perplexity = given("max-perplexity", max_perplexity);
  const auto gate_loss = given("max-loss", max_loss);
  if (!server.empty() && (gate_perplexity || gate_loss)) {
    return flags.UsageError(
        "--max-perplexity and --max-loss need --checkpoint (a server gives no loss)");
  }
  if (flags.IsSet("seed") && !flags.IsSet("samples")) {
    return flags.UsageError("--seed chooses among --samples examples; give --samples too");
  }
  auto examples = serve::ReadEvalSet(data);
  if (!examples.ok()) return Fail(examples.status());
  if (flags.IsSet("samples")) {
    *examples = serve::SampleExamples(
        std::move(*examples), static_cast<size_t>(samples),
        flags.IsSet("seed") ? std::optional<uint64_t>(static_cast<uint64_t>(seed)) : std::nullopt);
  }
  nlohmann::json report = {{"examples", examples->size()}};
  std::optional<model::Gpt<float>> model;
  if (!checkpoint.empty()) {
    auto warn = [](const std::string& message) {
      std::fprintf(stderr, "kiln-worker eval: %s\n", message.c_str());
    };
    if (storage::IsS3Uri(checkpoint)) {
      auto path = train::FetchS3Model(checkpoint, cache_dir, warn);
      if (!path.ok()) return Fail(path.status());
      checkpoint = *path;
    }
    auto loaded = train::LoadModel(checkpoint, "", warn);
    if (!loaded.ok()) return Fail(loaded.status());
    model = std::move(loaded->model);
    const std::string path = loaded->path;
    report["checkpoint"] = path;
    auto loss = serve::EvaluateLoss(*model, *examples);
    if (!loss.ok()) return Fail(loss.status());
    report["loss"] = {
        {"tokens", loss->tokens}, {"mean", loss->loss}, {"perplexity", loss->perplexity}};
  } else {
    report["server"] = server;
  }
  auto completer =
      model ? serve::NewModelCompleter(*model) : serve::NewHttpCompleter(server, model_name);
  auto exact = serve::EvaluateExactMatch(*completer, *examples);
  if (!exact.ok()) return Fail(exact.status());
  report["exactMatch"] = {{"total", exact->total},
                          {"correct", exact->correct},
                          {"accuracy", exact->accuracy},
                          {"failedLines", exact->failed_lines}};
  // Gates: each one given is reported with its value and verdict.
  bool passed = true;
  nlohmann::json gates = nlohmann::json::object();
  auto gate = [&](const char* name, std::optional<double> limit, double value, bool at_least) {
    if (!limit) return;
    const bool ok = at_least ? value >= *limit : value <= *limit;
    gates[name] = {{"limit", *limit}, {"value", value}, {"passed", ok}};
    passed = passed && ok;
  };
  if (gate_accuracy && exact->total == 0) {
    return Fail(Status::DataLoss(data + ": --min-accuracy needs prompt/completion examples"));
  }
  gate("minAccuracy", gate_accuracy, exact->accuracy, true);
  if (report.contains("loss")) {
    gate("maxPerplexity", gate_perplexity, report["loss"]["perplexity"].get<double>(), false);
    gate("maxLoss", gate_loss, report["loss"]["mean"].get<double>(), false);
  }
  report["gates"] = gates;
  report["passed"] = passed;
  const std::string text = report.dump();
  std::printf("%s\n", text.c_str());
  if (!report_path.empty()) {
    std::FILE* f = std::fopen(report_path.c_str(), "w");
    const bool written = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (f != nullptr && std::fclose(f) != 0) return Fail(ErrnoStatus(errno, "close", report_path));
    if (!written) return Fail(ErrnoStatus(errno, "write", report_path));
  }
  return passed ? 0 : ToInt(ExitCode::kQualityGateFailed);
}

}  // namespace kiln::worker
