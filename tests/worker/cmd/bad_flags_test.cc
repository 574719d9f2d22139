// Every kiln-worker command against a table of bad flag lines: each exits 2
// (ConfigurationError) and its error names the flag and what was expected.
// The real binary runs, so the tables cover the entry points as users see them.
#include <catch2/catch.hpp>

#include "tests/support/worker_process.h"

namespace kiln {
namespace {

struct BadLine {
  std::vector<std::string> args;  // After the command.
  std::string error;              // Expected in stderr after "<program>: ".
};

void CheckTable(const std::string& command, const std::vector<BadLine>& table) {
  const std::string program = command.empty() ? "kiln-worker" : "kiln-worker " + command;
  for (const auto& line : table) {
    std::vector<std::string> args = line.args;
    if (!command.empty()) args.insert(args.begin(), command);
    INFO(program << " " << Catch::Detail::stringify(line.args));
    auto r = testing::Worker(args);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.stderr_data, Catch::StartsWith(program + ": " + line.error));
    CHECK_THAT(r.stderr_data, Catch::Contains("Run '" + program + " --help' for usage."));
    CHECK(r.stdout_data.empty());
  }
}

TEST_CASE("kiln-worker refuses bad top-level flags", "[worker][cli][flags][process]") {
  CheckTable("", {
                     {{"--bogus"}, "unknown flag '--bogus'"},
                     {{"--version=maybe"}, "--version: \"maybe\" is not true or false"},
                     {{"frobnicate"}, "unknown command 'frobnicate'"},
                     {{"--version", "stray"}, "unexpected argument 'stray'"},
                 });
}

TEST_CASE("kiln-worker devices refuses every flag", "[worker][cli][flags][process]") {
  CheckTable("devices", {
                            {{"--what"}, "unknown flag '--what'"},
                            {{"--cuda-device=0"}, "unknown flag '--cuda-device'"},
                            {{"extra"}, "unexpected argument 'extra'"},
                        });
}

TEST_CASE("kiln-worker prepare refuses bad flags", "[worker][cli][flags][process]") {
  const std::vector<std::string> ok = {"--input", "/nonexistent/in", "--output",
                                       "/nonexistent/out"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = ok;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  CheckTable(
      "prepare",
      {
          {with({"--bogus"}), "unknown flag '--bogus'"},
          {with({"stray"}), "unexpected argument 'stray'"},
          {with({"--val-fraction", "abc"}), "--val-fraction: \"abc\" is not a number"},
          {with({"--val-fraction=0.7"}), "--val-fraction: \"0.7\" is outside [0, 0.5]"},
          {with({"--shard-tokens", "12x"}), "--shard-tokens: \"12x\" is not an integer"},
          {with({"--shard-tokens", "2.5"}), "--shard-tokens: \"2.5\" is not an integer"},
          {with({"--shard-tokens", "0"}), "--shard-tokens: \"0\" is outside [1, "},
          {with({"--format", "yaml"}), "--format: \"yaml\" is not one of auto, fortunes, text"},
          {with({"--output"}), "--output: needs a value"},
          {{"--input", "/x"}, "missing --output"},
          {{"--output", "/x"}, "missing --input"},
      });
}

TEST_CASE("kiln-worker train refuses bad flags", "[worker][cli][flags][process]") {
  auto with = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--data", "/nonexistent/manifest.json"});
    return extra;
  };
  CheckTable(
      "train",
      {
          {with({"--bogus", "1"}), "unknown flag '--bogus'"},
          {with({"--layers", "2.5"}), "--layers: \"2.5\" is not an integer"},
          {with({"--layers=0"}), "--layers: \"0\" is outside [1, 1024]"},
          {with({"--heads", "four"}), "--heads: \"four\" is not an integer"},
          {with({"--batch", "-1"}), "--batch: \"-1\" is outside [1, "},
          {with({"--steps", "ten"}), "--steps: \"ten\" is not an integer"},
          {with({"--steps", "1e3"}), "--steps: \"1e3\" is not an integer"},
          {with({"--seed", "-5"}), "--seed: \"-5\" is not an integer"},
          {with({"--lr", "fast"}), "--lr: \"fast\" is not a number"},
          {with({"--lr=inf"}), "--lr: \"inf\" is not a number"},
          {with({"--min-lr-ratio", "2"}), "--min-lr-ratio: \"2\" is outside [0, 1]"},
          {with({"--grad-clip", "-1"}), "--grad-clip: \"-1\" is outside [0, "},
          {with({"--device", "gpu"}), "--device: \"gpu\" is not one of cpu, cuda"},
          {with({"--cuda-device", "x"}), "--cuda-device: \"x\" is not an integer"},
          {with({"--comm-timeout", "10"}), "--comm-timeout: duration \"10\""},
          {with({"--rendezvous-timeout", "0"}), "--rendezvous-timeout: \"0\" is shorter than 1ms"},
          {with({"--metrics-bind-address", "9400"}),
           "--metrics-bind-address: bind address \"9400\""},
          {with({"--checkpoint-dir"}), "--checkpoint-dir: needs a value"},
          {{"--steps", "3"}, "--data is required"},
      });
}

TEST_CASE("kiln-worker serve refuses bad flags", "[worker][cli][flags][process]") {
  auto with = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--checkpoint", "/nonexistent/ckpt"});
    return extra;
  };
  CheckTable(
      "serve",
      {
          {with({"--bogus"}), "unknown flag '--bogus'"},
          {with({"--max-running", "zero"}), "--max-running: \"zero\" is not an integer"},
          {with({"--max-running", "0"}), "--max-running: \"0\" is outside [1, 4096]"},
          {with({"--block-size=1.5"}), "--block-size: \"1.5\" is not an integer"},
          {with({"--kv-blocks", "-1"}), "--kv-blocks: \"-1\" is outside [0, "},
          {with({"--drain-timeout", "soon"}), "--drain-timeout: duration \"soon\""},
          {with({"--device", "tpu"}), "--device: \"tpu\" is not one of cpu, cuda"},
          {with({"--cpu-weights", "fp8"}), "--cpu-weights: \"fp8\" is not one of float, bf16"},
          {with({"--bind"}), "--bind: needs a value"},
          {with({"stray"}), "unexpected argument 'stray'"},
          {{"--bind", ":0"}, "--checkpoint is required"},
      });
}

TEST_CASE("kiln-worker eval refuses bad flags", "[worker][cli][flags][process]") {
  auto with = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--data", "/nonexistent/eval.jsonl", "--checkpoint", "/x"});
    return extra;
  };
  CheckTable("eval",
             {
                 {with({"--bogus"}), "unknown flag '--bogus'"},
                 {with({"--min-accuracy", "high"}), "--min-accuracy: \"high\" is not a number"},
                 {with({"--min-accuracy", "1.5"}), "--min-accuracy: \"1.5\" is outside [0, 1]"},
                 {with({"--max-perplexity=-3"}), "--max-perplexity: \"-3\" is outside [0, "},
                 {with({"--max-loss", "1.0x"}), "--max-loss: \"1.0x\" is not a number"},
                 {with({"--model"}), "--model: needs a value"},
                 {with({"--samples", "0"}), "--samples: \"0\" is outside [1, "},
                 {with({"--samples", "4", "--seed", "-1"}), "--seed: \"-1\" is outside [0, "},
                 {with({"--seed", "7"}), "--seed chooses among --samples examples"},
                 {{"--checkpoint", "/x"}, "--data is required"},
                 {{"--data", "/x"}, "give exactly one of --checkpoint and --server"},
                 {{"--data", "/x", "--server", "http://h:1", "--max-loss", "1"},
                  "--max-perplexity and --max-loss need --checkpoint"},
             });
}

TEST_CASE("kiln-worker convert refuses bad flags", "[worker][cli][flags][process]") {
  auto with = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--input", "/nonexistent/in", "--output", "/nonexistent/out"});
    return extra;
  };
  CheckTable("convert", {
                            {with({"--bogus"}), "unknown flag '--bogus'"},
                            {with({"--to", "onnx"}), "--to: \"onnx\" is not one of kiln, llmc"},
                            {with({"--bf16=yes"}), "--bf16: \"yes\" is not true or false"},
                            {with({"--to"}), "--to: needs a value"},
                            {{"--input", "/x"}, "--input and --output are required"},
                        });
}

}  // namespace
}  // namespace kiln
