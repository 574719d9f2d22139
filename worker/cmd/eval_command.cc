#include "worker/cmd/eval_command.h"

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/cmd/flags.h"
#include "worker/exit_codes.h"
#include "worker/serve/eval.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

constexpr const char* kUsage =
    "Usage: kiln-worker eval --data EVAL.jsonl (--checkpoint PATH | --server URL) [gates]\n"
    "\n"
    "Measures a model on an evaluation set (JSON Lines: {\"text\": ...} lines are\n"
    "scored for loss; {\"prompt\": ..., \"completion\": ...} lines for the loss of the\n"
    "completion and for exact match of the greedy completion) and prints one JSON\n"
    "object: {\"examples\", \"loss\": {\"tokens\", \"mean\", \"perplexity\"},\n"
    "\"exactMatch\": {\"total\", \"correct\", \"accuracy\", \"failedLines\"}, \"gates\",\n"
    "\"passed\"}.\n"
    "\n"
    "  --data PATH             The evaluation set (required).\n"
    "  --checkpoint PATH       A checkpoint file or directory (its newest intact one)\n"
    "                          or an llm.c model file: loss and\n"
    "                          exact match.\n"
    "  --server URL            A running 'kiln-worker serve' (e.g. http://model:8000):\n"
    "                          exact match only (loss needs the weights).\n"
    "  --model NAME            The model name to send to the server.\n"
    "  --min-accuracy X        Gate: exact-match accuracy must be at least X (0-1).\n"
    "  --max-perplexity X      Gate: perplexity must be at most X.\n"
    "  --max-loss X            Gate: mean loss (nats per token) must be at most X.\n"
    "\n"
    "Exit codes: 0 evaluated and every gate passed, 2 bad flags, 3 the server\n"
    "cannot be reached, 6 the evaluation set or checkpoint is missing or malformed,\n"
    "7 a gate was missed (QualityGateFailed).\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-worker eval: %s\n\nRun 'kiln-worker eval --help' for usage.\n",
               why.c_str());
  return ToInt(ExitCode::kConfigurationError);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker eval: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

// A non-negative number flag given as text; nullopt when unset.
std::optional<double> Number(const std::string& text, std::string& error, const char* name) {
  if (text.empty()) return std::nullopt;
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && v >= 0 && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  error = std::string("--") + name + ": '" + text + "' is not a non-negative number";
  return std::nullopt;
}

}  // namespace

int RunEvalCommand(int argc, char** argv) {
  std::string data, checkpoint, server, model_name, min_accuracy, max_perplexity, max_loss;
  FlagSet flags;
  flags.String("data", &data);
  flags.String("checkpoint", &checkpoint);
  flags.String("server", &server);
  flags.String("model", &model_name);
  flags.String("min-accuracy", &min_accuracy);
  flags.String("max-perplexity", &max_perplexity);
  flags.String("max-loss", &max_loss);
  if (std::string error = flags.Parse(argc, argv, 2); !error.empty()) {
    if (error == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return Usage(error);
  }
  if (data.empty()) return Usage("--data is required");
  if (checkpoint.empty() == server.empty()) {
    return Usage("give exactly one of --checkpoint and --server");
  }
  std::string error;
  const auto gate_accuracy = Number(min_accuracy, error, "min-accuracy");
  const auto gate_perplexity = Number(max_perplexity, error, "max-perplexity");
  const auto gate_loss = Number(max_loss, error, "max-loss");
  if (!error.empty()) return Usage(error);
  if (gate_accuracy && *gate_accuracy > 1) return Usage("--min-accuracy must be in [0, 1]");
  if (!server.empty() && (gate_perplexity || gate_loss)) {
    return Usage("--max-perplexity and --max-loss need --checkpoint (a server gives no loss)");
  }

  auto examples = serve::ReadEvalSet(data);
  if (!examples.ok()) return Fail(examples.status());
  nlohmann::json report = {{"examples", examples->size()}};
  std::optional<model::Gpt<float>> model;
  if (!checkpoint.empty()) {
    auto loaded = train::LoadModel(checkpoint, "", [](const std::string& message) {
      std::fprintf(stderr, "kiln-worker eval: %s\n", message.c_str());
    });
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
  std::printf("%s\n", report.dump().c_str());
  return passed ? 0 : ToInt(ExitCode::kQualityGateFailed);
}

}  // namespace kiln::worker
