#include "base/flags.h"

#include <catch2/catch.hpp>

namespace kiln {
namespace {

// Parses `args` (without a program name) with `flags`.
Status ParseArgs(FlagSet& flags, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return flags.Parse(static_cast<int>(argv.size()), argv.data(), 0);
}

struct Values {
  std::string name = "kiln";
  std::vector<std::string> inputs;
  bool verbose = false;
  int layers = 4;
  int64_t steps = 100;
  uint64_t seed = 1337;
  double lr = 3e-4;
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  std::string device = "cpu";
};

void Define(FlagSet& f, Values& v) {
  f.String("name", &v.name, "The name.");
  f.Strings("input", &v.inputs, "An input.");
  f.Bool("verbose", &v.verbose, "Say more.");
  f.Int("layers", &v.layers, 1, 64, "Transformer blocks.");
  f.Int("steps", &v.steps, int64_t{1}, std::numeric_limits<int64_t>::max(), "Steps.");
  f.Int("seed", &v.seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(), "Seed.");
  f.Double("lr", &v.lr, 0, 1, "Learning rate.");
  f.Duration("timeout", &v.timeout, std::chrono::milliseconds(1), "How long.");
  f.Enum("device", &v.device, {"cpu", "cuda"}, "Where.");
}

TEST_CASE("FlagSet parses every type, in both spellings", "[base][flags]") {
  Values v;
  FlagSet f("prog", "Usage: prog");
  Define(f, v);
  REQUIRE(ParseArgs(f, {"--name", "x", "--input=a", "--input", "b", "--verbose", "--layers=12",
                        "--steps", "5000000000", "--seed", "18446744073709551615", "--lr", "1e-3",
                        "--timeout", "1m30s", "--device=cuda"})
              .ok());
  CHECK(v.name == "x");
  CHECK(v.inputs == std::vector<std::string>{"a", "b"});
  CHECK(v.verbose);
  CHECK(v.layers == 12);
  CHECK(v.steps == 5000000000);
  CHECK(v.seed == 18446744073709551615ull);
  CHECK(v.lr == 1e-3);
  CHECK(v.timeout == std::chrono::seconds(90));
  CHECK(v.device == "cuda");
  CHECK(f.IsSet("layers"));
  CHECK_FALSE(f.IsSet("nothing"));
}

TEST_CASE("FlagSet leaves defaults alone and reports what was set", "[base][flags]") {
  Values v;
  FlagSet f("prog", "Usage: prog");
  Define(f, v);
  REQUIRE(ParseArgs(f, {"--verbose=false"}).ok());
  CHECK(v.layers == 4);
  CHECK_FALSE(v.verbose);
  CHECK(f.IsSet("verbose"));
  CHECK_FALSE(f.IsSet("layers"));
}

TEST_CASE("FlagSet refuses bad lines, naming the flag and what it expected", "[base][flags]") {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"--layers", "2.5"}, "--layers: \"2.5\" is not an integer"},
      {{"--layers=12x"}, "--layers: \"12x\" is not an integer"},
      {{"--layers="}, "--layers: \"\" is not an integer"},
      {{"--layers", "0"}, "--layers: \"0\" is outside [1, 64]"},
      {{"--layers", "99999999999999999999"}, "--layers: \"99999999999999999999\" is outside"},
      {{"--steps", "0"}, "--steps: \"0\" is outside [1, "},
      {{"--seed", "-1"}, "--seed: \"-1\" is not an integer"},
      {{"--lr", "fast"}, "--lr: \"fast\" is not a number"},
      {{"--lr", "nan"}, "--lr: \"nan\" is not a number"},
      {{"--lr", "2"}, "--lr: \"2\" is outside [0, 1]"},
      {{"--lr", "0.1x"}, "--lr: \"0.1x\" is not a number"},
      {{"--timeout", "ten"}, "--timeout: duration \"ten\""},
      {{"--timeout", "0"}, "--timeout: \"0\" is shorter than 1ms"},
      {{"--device", "gpu"}, "--device: \"gpu\" is not one of cpu, cuda"},
      {{"--verbose=yes"}, "--verbose: \"yes\" is not true or false"},
      {{"--name"}, "--name: needs a value"},
      {{"--bogus"}, "unknown flag '--bogus'"},
      {{"--bogus=1"}, "unknown flag '--bogus'"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"--"}, "unexpected argument '--'"},
      {{"-layers", "3"}, "unknown flag '-layers'"},  // One dash: a one-letter alias.
  };
  for (const auto& c : cases) {
    INFO(c.message);
    Values v;
    FlagSet f("prog", "Usage: prog");
    Define(f, v);
    Status s = ParseArgs(f, c.args);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().rfind(c.message, 0) == 0);
  }
}

TEST_CASE("FlagSet runs a flag's extra check", "[base][flags]") {
  std::string address = ":8080";
  FlagSet f("prog", "Usage: prog");
  f.String("bind", &address, "Where.").Check([](const std::string& text) {
    return text.find(':') == std::string::npos ? Status::InvalidArgument("want host:port")
                                               : Status::Ok();
  });
  CHECK(ParseArgs(f, {"--bind", ":9000"}).ok());
  CHECK(ParseArgs(f, {"--bind", "9000"}).message() == "--bind: want host:port");
}

TEST_CASE("FlagSet generates --help from the definitions", "[base][flags]") {
  Values v;
  FlagSet f("prog", "Usage: prog [options]\n\nDoes things.", "Exit codes: 0 success.\n");
  f.Section("Model:");
  Define(f, v);
  f.Int("cuda-device", &v.layers, 0, 7, "The GPU.").DefaultText("LOCAL_RANK, else 0");
  f.String("data", &v.name, "The manifest.").Metavar("PATH");
  const std::string usage = f.Usage();
  INFO(usage);
  CHECK(usage.rfind("Usage: prog [options]\n\nDoes things.\n\nOptions", 0) == 0);
  CHECK(usage.find("Model:\n  --name STRING") != std::string::npos);
  CHECK(usage.find("  --layers N                Transformer blocks. (1 to 64; default 4)\n") !=
        std::string::npos);
  CHECK(usage.find("--steps N                 Steps. (at least 1; default 100)") !=
        std::string::npos);
  CHECK(usage.find("--input STRING            An input. (repeatable)") != std::string::npos);
  CHECK(usage.find("--verbose                 Say more.\n") != std::string::npos);
  CHECK(usage.find("--lr X                    Learning rate. (0 to 1; default 0.0003)") !=
        std::string::npos);
  CHECK(usage.find("--timeout DURATION        How long. (at least 1ms; default 30s)") !=
        std::string::npos);
  CHECK(usage.find("--device cpu|cuda         Where. (default cpu)") != std::string::npos);
  CHECK(usage.find("(0 to 7; default LOCAL_RANK, else 0)") != std::string::npos);
  CHECK(usage.find("--data PATH") != std::string::npos);
  CHECK(usage.find("--help                    Show this help and exit.\n\nExit codes") !=
        std::string::npos);
  for (size_t start = 0, end; (end = usage.find('\n', start)) != std::string::npos;
       start = end + 1) {
    CHECK(end - start <= 80);
  }
}

TEST_CASE("FlagSet::ParseOrExit answers --help and errors with the exit status", "[base][flags]") {
  Values v;
  FlagSet f("prog", "Usage: prog");
  Define(f, v);
  std::vector<std::string> help = {"--layers", "3", "--help"};
  std::vector<char*> argv;
  for (auto& a : help) argv.push_back(a.data());
  CHECK(f.ParseOrExit(3, argv.data(), 0) == 0);
  std::vector<std::string> bad = {"--layers", "x"};
  argv.clear();
  for (auto& a : bad) argv.push_back(a.data());
  CHECK(f.ParseOrExit(2, argv.data(), 0) == kUsageExitCode);
  // "--help" as a flag's value is a value.
  std::vector<std::string> value = {"--name", "--help"};
  argv.clear();
  for (auto& a : value) argv.push_back(a.data());
  CHECK(f.ParseOrExit(2, argv.data(), 0) == std::nullopt);
  CHECK(v.name == "--help");
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST_CASE("FlagSet takes one-letter aliases and positionals among the flags", "[base][flags]") {
  std::string ns = "default", output;
  bool all = false;
  std::vector<std::string> words;
  FlagSet f("kubectl kiln", "Usage: kubectl kiln");
  f.String("namespace", &ns, "Namespace.").Short('n');
  f.Bool("all-namespaces", &all, "All.").Short('A');
  f.Enum("output", &output, {"json", "yaml"}, "Format.").Short('o');
  f.Positionals(&words);
  REQUIRE(ParseArgs(f, {"status", "-n", "team", "tj", "-A", "x", "-o=yaml", "--", "-y"}).ok());
  CHECK(ns == "team");
  CHECK(all);
  CHECK(output == "yaml");
  CHECK(words == std::vector<std::string>{"status", "tj", "x", "-y"});
  CHECK(f.IsSet("namespace"));
  CHECK(f.Usage().find("  -n, --namespace STRING") != std::string::npos);

  // Errors name the flag as it was spelled.
  CHECK(ParseArgs(f, {"-o", "xml"}).message() == "-o: \"xml\" is not one of json, yaml");
  CHECK(ParseArgs(f, {"-z"}).message() == "unknown flag '-z'");
  CHECK(ParseArgs(f, {"-n"}).message() == "-n: needs a value");
  CHECK(ParseArgs(f, {"-nteam"}).message() == "unknown flag '-nteam'");
}

TEST_CASE("FlagSet without positionals still refuses stray arguments", "[base][flags]") {
  std::string ns;
  FlagSet f("prog", "Usage: prog");
  f.String("namespace", &ns, "Namespace.").Short('n');
  CHECK(ParseArgs(f, {"stray"}).message() == "unexpected argument 'stray'");
  CHECK(ParseArgs(f, {"--"}).message() == "unexpected argument '--'");
  REQUIRE(ParseArgs(f, {"-n", "x"}).ok());
  CHECK(ns == "x");
}

}  // namespace
}  // namespace kiln
