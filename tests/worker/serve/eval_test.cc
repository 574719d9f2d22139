// Evaluation for the quality gate: the loss equals the training model's own
// cross-entropy, long texts are scored in windows, exact match counts what
// it should, and `kiln-worker eval` reports JSON and exits by its gates, from
// a checkpoint or a running server.
#include "worker/serve/eval.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <thread>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "base/subprocess.h"
#include "tests/support/background_process.h"
#include "tests/support/http_probe.h"
#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "worker/train/checkpoint.h"

namespace kiln::serve {
namespace {

using kiln::testing::TempDir;
using nlohmann::json;

model::Gpt<float> TestModel(int context) { return testing::RandomGpt(2, 2, 32, context, 5, 0.3f); }

std::string Greedy(model::Gpt<float>& m, const std::string& prompt, int n) {
  auto c = NewModelCompleter(m);
  auto text = c->Complete(prompt, n);
  REQUIRE(text.ok());
  return *text;
}

TEST_CASE("the evaluation loss is the model's cross-entropy of the scored tokens",
          "[serve][eval]") {
  auto m = TestModel(64);
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  std::vector<int32_t> tokens(text.begin(), text.end());
  const int T = static_cast<int>(tokens.size()) - 1;
  auto want = m.Forward(tokens.data(), tokens.data() + 1, 1, T);
  REQUIRE(want.ok());
  auto got = EvaluateLoss(m, {{.line = 1, .completion = text}});
  REQUIRE(got.ok());
  CHECK(got->tokens == T);
  CHECK(got->loss == Approx(static_cast<double>(*want)).epsilon(1e-5));
  CHECK(got->perplexity == Approx(std::exp(got->loss)));
  // A prompt/completion example scores only the completion, given the prompt.
  auto conditional = EvaluateLoss(m, {{.line = 1, .prompt = "The quick ", .completion = "brown"}});
  REQUIRE(conditional.ok());
  CHECK(conditional->tokens == 5);
  // Longer than the context: every token after the first is scored, in windows.
  std::string long_text;
  for (int i = 0; i < 20; ++i) long_text += text;
  auto windows = EvaluateLoss(m, {{.line = 1, .completion = long_text}});
  REQUIRE(windows.ok());
  CHECK(windows->tokens == static_cast<int64_t>(long_text.size()) - 1);
  CHECK(std::isfinite(windows->loss));
}

TEST_CASE("exact match counts greedy completions equal to the reference", "[serve][eval]") {
  auto m = TestModel(64);
  const std::string right = Greedy(m, "Q: 2+2? A:", 6);
  std::vector<EvalExample> set = {
      {.line = 1, .prompt = "Q: 2+2? A:", .completion = right, .exact_match = true},
      {.line = 2,
       .prompt = "Q: 2+2? A:",
       .completion = right.substr(0, 5) + "~",
       .exact_match = true},
      {.line = 3, .completion = "text lines are not exact-match examples"},
  };
  auto c = NewModelCompleter(m);
  auto r = EvaluateExactMatch(*c, set);
  REQUIRE(r.ok());
  CHECK(r->total == 2);
  CHECK(r->correct == 1);
  CHECK(r->accuracy == 0.5);
  CHECK(r->failed_lines == std::vector<int>{2});
}

TEST_CASE("examples are sampled the same way for the same seed, in the set's order",
          "[serve][eval]") {
  std::vector<EvalExample> all(1000);
  for (int i = 0; i < 1000; ++i) all[static_cast<size_t>(i)].line = i + 1;
  auto lines = [](const std::vector<EvalExample>& examples) {
    std::vector<int> out;
    for (const auto& e : examples) out.push_back(e.line);
    return out;
  };
  // No seed: the first n.
  CHECK(lines(SampleExamples(all, 3, std::nullopt)) == std::vector<int>{1, 2, 3});
  // No more than n: all of them, seed or not.
  CHECK(SampleExamples(all, 1000, 7).size() == 1000);
  CHECK(SampleExamples(all, 5000, 7).size() == 1000);

  const std::vector<int> a = lines(SampleExamples(all, 100, 7));
  REQUIRE(a.size() == 100);
  CHECK(a == lines(SampleExamples(all, 100, 7)));  // Reproducible.
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(std::adjacent_find(a.begin(), a.end()) == a.end());  // No repeats.
  CHECK(a != lines(SampleExamples(all, 100, 8)));
  // Spread over the set, not its head: of 100 of 1000, the chance that all
  // fall in the first or the last half is 2 * 0.5^100.
  CHECK(a.front() <= 500);
  CHECK(a.back() > 500);
  // Fixed arithmetic: the same choice on every build (a change of the
  // generator would change every gate's examples).
  // (Computed apart, by the same SplitMix64 and partial Fisher-Yates in Python.)
  CHECK(lines(SampleExamples(all, 5, 1)) == std::vector<int>{206, 243, 466, 583, 628});
  std::map<int, int> hits;  // Roughly uniform: each line chosen ~n/N of the time.
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    for (int line : lines(SampleExamples(all, 10, seed))) ++hits[line];
  }
  // 20,000 picks over 1000 lines: 20 each on average; every line in [1, 60]
  // (a line never or nearly always chosen would mean a biased generator).
  int never = 0;
  for (int line = 1; line <= 1000; ++line) {
    never += hits.count(line) == 0 ? 1 : 0;
    CHECK(hits[line] <= 60);
  }
  CHECK(never == 0);
}

TEST_CASE("a malformed evaluation set is refused naming the line", "[serve][eval]") {
  TempDir dir;
  auto refused = [&](const std::string& content, const std::string& why) {
    auto r = ReadEvalSet(dir.Write("set.jsonl", content));
    INFO(content);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kDataLoss);
    CHECK_THAT(r.status().message(), Catch::Contains(why));
  };
  refused("{\"text\": \"ok\"}\n{oops\n", "set.jsonl:2: not a JSON object");
  refused("{\"prompt\": \"p\"}\n", ":1: needs 'text', or both");
  refused("{\"text\": \"t\", \"prompt\": \"p\"}\n", "either 'text' or");
  refused("{\"text\": \"t\", \"label\": 1}\n", "unknown field 'label'");
  refused("{\"text\": 5}\n", "'text' must be a string");
  refused("{\"text\": \"\"}\n", "empty");
  refused("\n\n", "no examples");
  CHECK(ReadEvalSet(dir.path() + "/none.jsonl").status().code() == StatusCode::kNotFound);
}

TEST_CASE("kiln-worker eval reports JSON and exits by its gates, from a checkpoint or a server",
          "[serve][eval][process]") {
  TempDir dir;
  auto m = TestModel(128);
  // Zero embedding rows for bytes >= 128 and end of text: their logits are 0,
  // below the best ASCII one, so greedy text is ASCII (JSON needs UTF-8).
  auto wte = m.param(model::Param::kWte);
  std::fill(wte.begin() + 128 * 32, wte.end(), 0.0f);
  auto ckpt = train::WriteCheckpoint(dir.path() + "/ckpt", m, {.step = 3}, 1);
  REQUIRE(ckpt.ok());
  const std::string right = Greedy(m, "Say hi: ", 4);
  std::string lines = json{{"text", "Some text to score."}}.dump() + "\n" +
                      json{{"prompt", "Say hi: "}, {"completion", right}}.dump() + "\n" +
                      json{{"prompt", "Say hi: "}, {"completion", "\x01\x02\x03\x04"}}.dump() +
                      "\n";
  const std::string set = dir.Write("eval.jsonl", lines);
  auto eval = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {KILN_WORKER_BIN, "eval", "--data", set});
    auto r = RunProcess({.argv = args, .timeout = std::chrono::minutes(2)});
    REQUIRE(r.ok());
    return *r;
  };
  auto pass = eval({"--checkpoint", dir.path() + "/ckpt", "--min-accuracy", "0.5", "--report",
                    dir.path() + "/report.json"});
  INFO(pass.stderr_data);
  CHECK(pass.exit_code == 0);
  json report = json::parse(pass.stdout_data);
  // --report: the same report in a file (the quality gate's termination message).
  auto written = ReadFile(dir.path() + "/report.json");
  REQUIRE(written.ok());
  CHECK(json::parse(*written) == report);
  CHECK(eval({"--checkpoint", *ckpt, "--report", dir.path() + "/no/such/dir/r.json"}).exit_code !=
        0);
  CHECK(report["examples"] == 3);
  CHECK(report["exactMatch"]["correct"] == 1);
  CHECK(report["exactMatch"]["accuracy"] == 0.5);
  CHECK(report["exactMatch"]["failedLines"] == json::array({3}));
  CHECK(report["loss"]["tokens"] == 18 + 4 + 4);
  CHECK(report["passed"] == true);
  const double perplexity = report["loss"]["perplexity"];

  auto miss = eval({"--checkpoint", *ckpt, "--min-accuracy", "0.9", "--max-perplexity",
                    std::to_string(perplexity * 2)});
  CHECK(miss.exit_code == 7);
  report = json::parse(miss.stdout_data);
  CHECK(report["passed"] == false);
  CHECK(report["gates"]["minAccuracy"]["passed"] == false);
  CHECK(report["gates"]["maxPerplexity"]["passed"] == true);

  // --samples: only the first N examples are scored.
  auto first = eval({"--checkpoint", *ckpt, "--samples", "1"});
  CHECK(first.exit_code == 0);
  report = json::parse(first.stdout_data);
  CHECK(report["examples"] == 1);
  CHECK(report["loss"]["tokens"] == 18);
  CHECK(report["exactMatch"]["total"] == 0);
  CHECK(json::parse(eval({"--checkpoint", *ckpt, "--samples", "50"}).stdout_data)["examples"] == 3);

  CHECK(eval({"--checkpoint", *ckpt, "--max-loss", "0.001"}).exit_code == 7);
  CHECK(eval({"--checkpoint", *ckpt, "--min-accuracy", "2"}).exit_code == 2);
  CHECK(eval({"--min-accuracy", "0.5"}).exit_code == 2);  // Neither source.
  auto bad_set = RunProcess(
      {.argv = {KILN_WORKER_BIN, "eval", "--data", dir.path() + "/none", "--checkpoint", *ckpt}});
  REQUIRE(bad_set.ok());
  CHECK(bad_set->exit_code == 6);

  // The same exact-match result through a running server.
  const int port = testing::FreePort();
  testing::BackgroundProcess server({KILN_WORKER_BIN, "serve", "--checkpoint", *ckpt, "--bind",
                                     "127.0.0.1:" + std::to_string(port)},
                                    dir.path() + "/serve.out");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (server.Output().find("\"serving\"") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto remote =
      eval({"--server", "http://127.0.0.1:" + std::to_string(port), "--min-accuracy", "0.5"});
  INFO(remote.stderr_data);
  CHECK(remote.exit_code == 0);
  report = json::parse(remote.stdout_data);
  CHECK(report["exactMatch"]["correct"] == 1);
  CHECK_FALSE(report.contains("loss"));
  // A server that is not there is an infrastructure fault, not a failed gate.
  server.Signal(SIGTERM);
  CHECK(server.Wait() == 0);
  CHECK(eval({"--server", "http://127.0.0.1:" + std::to_string(port)}).exit_code == 3);
}

}  // namespace
}  // namespace kiln::serve
