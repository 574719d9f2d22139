#include "worker/data/prepare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "base/subprocess.h"
#include "tests/support/temp_dir.h"
#include "worker/data/checksum.h"
#include "worker/data/loader.h"
#include "worker/data/shard.h"
#include "worker/data/tokenizer.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCorpus = "/usr/share/games/fortunes";

// 20 fortunes in fortune(6) format, plus blank entries that must be dropped.
std::vector<std::string> SmallFortunes() {
  std::vector<std::string> docs;
  for (int i = 0; i < 20; ++i) {
    docs.push_back("Fortune " + std::to_string(i) + ": " +
                   std::string(static_cast<std::size_t>(i), 'x') + "\n\tsaid nobody.\n");
  }
  docs[3] = "Bytes " + std::string("\x00\x01\xfe\xff", 4) + " survive.\n";
  return docs;
}

std::string FortunesFile(const std::vector<std::string>& docs) {
  std::string text = "%\n";  // Leading separator and a blank entry.
  for (const auto& d : docs) text += d + "%\n";
  text += "  \n%\n";
  return text;
}

// The documents of a split, decoded from its shards; checks the EOT count.
std::vector<std::string> SplitDocs(const std::string& dir, const ManifestSplit& split) {
  std::vector<uint16_t> all;
  for (const auto& shard : split.shards) {
    auto tokens = ReadShard(dir + "/" + shard.file, ByteTokenizer::kVocabSize);
    REQUIRE(tokens.ok());
    CHECK(static_cast<int64_t>(tokens->size()) == shard.tokens);
    auto sha = Sha256File(dir + "/" + shard.file);
    REQUIRE(sha.ok());
    CHECK(*sha == shard.sha256);
    all.insert(all.end(), tokens->begin(), tokens->end());
  }
  CHECK(static_cast<int64_t>(all.size()) == split.tokens);
  CHECK(std::count(all.begin(), all.end(), ByteTokenizer::kEot) == split.documents);
  if (!all.empty()) CHECK(all.back() == ByteTokenizer::kEot);
  auto text = ByteTokenizer(std::string(1, '\0') + "<EOT>").Decode(all);
  REQUIRE(text.ok());
  std::vector<std::string> docs;
  const std::string marker = std::string(1, '\0') + "<EOT>";
  std::size_t start = 0;
  for (std::size_t at; (at = text->find(marker, start)) != std::string::npos;) {
    docs.push_back(text->substr(start, at - start));
    start = at + marker.size();
  }
  return docs;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return Sorted(names);
}

PrepareResult MustPrepare(const PrepareOptions& options) {
  auto result = Prepare(options);
  if (!result.ok()) FAIL(result.status().ToString());
  return std::move(result).value();
}

TEST_CASE("fortunes split at lines holding only a percent sign", "[data][prepare]") {
  std::string text = "a\n%\nb\nc 50%\n%\r\n\n%\n%\n  100%\nlast";
  CHECK(DetectFormat(text) == InputFormat::kFortunes);
  CHECK(SplitDocuments(text, InputFormat::kAuto) ==
        std::vector<std::string_view>{"a\n", "b\nc 50%\n", "  100%\nlast"});
  CHECK(SplitDocuments(text, InputFormat::kText) == std::vector<std::string_view>{text});
  CHECK(DetectFormat("50%\n%%\n%d\n") == InputFormat::kText);
  CHECK(DetectFormat("%\nstarts with one") == InputFormat::kFortunes);
  CHECK(SplitDocuments("no separator\n", InputFormat::kAuto) ==
        std::vector<std::string_view>{"no separator\n"});
  CHECK(SplitDocuments(" \n\t\n", InputFormat::kText).empty());
  CHECK(SplitDocuments("%\n%\n", InputFormat::kFortunes).empty());
  CHECK(*ParseInputFormat("fortunes") == InputFormat::kFortunes);
  CHECK(ParseInputFormat("yaml").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("prepare writes every document once, EOT-terminated, into train and val",
          "[data][prepare]") {
  testing::TempDir dir;
  auto docs = SmallFortunes();
  std::string input = dir.Write("in/small", FortunesFile(docs));
  std::string out = dir.path() + "/out";
  PrepareResult r = MustPrepare({.inputs = {input}, .output_dir = out, .val_fraction = 0.1});

  const Manifest& m = r.manifest;
  CHECK(r.manifest_path == out + "/manifest.json");
  REQUIRE(m.inputs.size() == 1);
  CHECK(m.inputs[0].path == input);
  CHECK(m.inputs[0].format == "fortunes");
  CHECK(m.inputs[0].documents == 20);
  CHECK(m.inputs[0].bytes == static_cast<int64_t>(FortunesFile(docs).size()));
  CHECK(m.vocab_size == 257);
  CHECK(m.eot == 256);
  CHECK(m.tokenizer == "byte");
  CHECK(m.val.documents == 2);
  CHECK(m.train.documents == 18);
  int64_t tokens = 0;
  for (const auto& d : docs) tokens += static_cast<int64_t>(d.size()) + 1;
  CHECK(m.train.tokens + m.val.tokens == tokens);
  CHECK(Listing(out) ==
        std::vector<std::string>{"manifest.json", "train_000000.bin", "val_000000.bin"});

  auto train = SplitDocs(out, m.train);
  auto val = SplitDocs(out, m.val);
  CHECK(train.size() == 18);
  CHECK(val.size() == 2);
  std::vector<std::string> both = train;
  both.insert(both.end(), val.begin(), val.end());
  CHECK(Sorted(both) == Sorted(docs));

  auto reread = ReadManifest(r.manifest_path);
  REQUIRE(reread.ok());
  CHECK(ManifestToJson(*reread) == ManifestToJson(m));
}

TEST_CASE("prepare is deterministic to the byte", "[data][prepare]") {
  testing::TempDir dir;
  std::string input = dir.Write("small", FortunesFile(SmallFortunes()));
  PrepareOptions options{.inputs = {input}, .val_fraction = 0.25, .shard_tokens = 64};
  options.output_dir = dir.path() + "/one";
  MustPrepare(options);
  options.output_dir = dir.path() + "/two";
  MustPrepare(options);
  MustPrepare(options);  // Again over its own output.
  auto names = Listing(dir.path() + "/one");
  REQUIRE(names.size() > 3);
  CHECK(names == Listing(dir.path() + "/two"));
  for (const auto& name : names) {
    INFO(name);
    CHECK(*ReadFile(dir.path() + "/one/" + name) == *ReadFile(dir.path() + "/two/" + name));
  }
}

TEST_CASE("prepare cuts shards at the token limit and removes stale ones", "[data][prepare]") {
  testing::TempDir dir;
  auto docs = SmallFortunes();
  std::string input = dir.Write("small", FortunesFile(docs));
  std::string out = dir.path() + "/out";
  PrepareResult small =
      MustPrepare({.inputs = {input}, .output_dir = out, .val_fraction = 0, .shard_tokens = 50});
  const ManifestSplit& train = small.manifest.train;
  CHECK(small.manifest.val.shards.empty());
  CHECK(small.manifest.val.documents == 0);
  CHECK(train.documents == 20);
  REQUIRE(train.shards.size() == static_cast<std::size_t>((train.tokens + 49) / 50));
  for (std::size_t i = 0; i < train.shards.size(); ++i) {
    char want[32];
    std::snprintf(want, sizeof(want), "train_%06zu.bin", i);
    CHECK(train.shards[i].file == want);
    if (i + 1 < train.shards.size()) CHECK(train.shards[i].tokens == 50);
  }
  CHECK(Sorted(SplitDocs(out, train)) == Sorted(docs));

  MustPrepare({.inputs = {input}, .output_dir = out});
  CHECK(Listing(out) ==
        std::vector<std::string>{"manifest.json", "train_000000.bin", "val_000000.bin"});
}

TEST_CASE("a validation document is guaranteed from two documents on", "[data][prepare]") {
  testing::TempDir dir;
  std::string one = dir.Write("one", "only document\n");
  std::string two = dir.Write("two", "first\n%\nsecond\n");
  PrepareResult r1 = MustPrepare({.inputs = {one}, .output_dir = dir.path() + "/o1"});
  CHECK(r1.manifest.train.documents == 1);
  CHECK(r1.manifest.val.documents == 0);
  CHECK(r1.manifest.val.shards.empty());
  PrepareResult r2 = MustPrepare({.inputs = {two}, .output_dir = dir.path() + "/o2"});
  CHECK(r2.manifest.train.documents == 1);
  CHECK(r2.manifest.val.documents == 1);
  PrepareResult half =
      MustPrepare({.inputs = {two}, .output_dir = dir.path() + "/o3", .val_fraction = 0.5});
  CHECK(half.manifest.train.documents == 1);
}

TEST_CASE("directory inputs: sorted files, no index, hidden or duplicate files",
          "[data][prepare]") {
  testing::TempDir dir;
  std::string corpus = dir.path() + "/corpus";
  dir.Write("corpus/b_plain", "plain text, one document\n");
  dir.Write("corpus/a_fortunes", "one\n%\ntwo\n%\n");
  dir.Write("corpus/a_fortunes.dat", std::string("\x00\x00\x00\x02", 4));
  dir.Write("corpus/.hidden", "secret\n");
  fs::create_symlink("a_fortunes", corpus + "/a_fortunes.u8");
  fs::create_directory(corpus + "/sub");

  auto files = ListInputFiles({corpus});
  REQUIRE(files.ok());
  CHECK(*files == std::vector<std::string>{corpus + "/a_fortunes", corpus + "/b_plain"});

  PrepareResult r = MustPrepare({.inputs = {corpus}, .output_dir = dir.path() + "/out"});
  REQUIRE(r.manifest.inputs.size() == 2);
  CHECK(r.manifest.inputs[0].format == "fortunes");
  CHECK(r.manifest.inputs[0].documents == 2);
  CHECK(r.manifest.inputs[1].format == "text");
  CHECK(r.manifest.inputs[1].documents == 1);

  PrepareResult text = MustPrepare(
      {.inputs = {corpus}, .output_dir = dir.path() + "/out-text", .format = InputFormat::kText});
  CHECK(text.manifest.train.documents + text.manifest.val.documents == 2);
}

TEST_CASE("prepare reports bad inputs as data errors naming them", "[data][prepare]") {
  testing::TempDir dir;
  std::string out = dir.path() + "/out";
  auto fails = [&](std::vector<std::string> inputs) {
    auto r = Prepare({.inputs = std::move(inputs), .output_dir = out});
    REQUIRE_FALSE(r.ok());
    return r.status();
  };
  std::string missing = dir.path() + "/missing.txt";
  Status s = fails({missing});
  CHECK(s.code() == StatusCode::kNotFound);
  CHECK(s.message() == "input " + missing + " does not exist");

  std::string empty = dir.Write("empty.txt", "");
  std::string blank = dir.Write("blank.txt", "%\n \n%\n");
  s = fails({empty, blank});
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(s.message() == "the inputs hold no documents: " + empty + ", " + blank);

  dir.Write("index-only/x.dat", "index");
  s = fails({dir.path() + "/index-only"});
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(s.message().find(dir.path() + "/index-only") != std::string::npos);

  s = fails({"/dev/null"});
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("prepare rejects bad options as configuration errors", "[data][prepare]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", "text\n");
  std::string out = dir.path() + "/out";
  std::vector<PrepareOptions> bad = {
      {.inputs = {}, .output_dir = out},
      {.inputs = {input}, .output_dir = ""},
      {.inputs = {input}, .output_dir = out, .val_fraction = -0.01},
      {.inputs = {input}, .output_dir = out, .val_fraction = 0.51},
      {.inputs = {input}, .output_dir = out, .val_fraction = std::nan("")},
      {.inputs = {input}, .output_dir = out, .shard_tokens = 0},
      {.inputs = {input}, .output_dir = out, .shard_tokens = int64_t{1} << 31},
      {.inputs = {input}, .output_dir = input},
  };
  for (const auto& options : bad) {
    auto r = Prepare(options);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("manifests with unsafe shard names or another version are rejected", "[data][prepare]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", "one\n%\ntwo\n");
  PrepareResult r = MustPrepare({.inputs = {input}, .output_dir = dir.path() + "/out"});
  nlohmann::json good = ManifestToJson(r.manifest);
  CHECK(ParseManifest(good.dump(), "m").ok());

  nlohmann::json escape = good;
  escape["splits"]["train"]["shards"][0]["file"] = "../elsewhere.bin";
  auto bad = ParseManifest(escape.dump(), "m");
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("'../elsewhere.bin'") != std::string::npos);

  nlohmann::json future = good;
  future["formatVersion"] = 2;
  CHECK(ParseManifest(future.dump(), "m").status().message() ==
        "data manifest m: unsupported formatVersion 2, want 1");
  // Numbers out of range or with a fraction (the fuzzer's finds: converting
  // them was undefined behaviour) are refused, naming the field.
  for (const auto& [pointer, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"/splits/train/shards/0/tokens", 7.8e90},
           {"/vocabSize", 4.4e42},
           {"/vocabSize", 4294967553LL},  // An int64, but no int.
           {"/eot", 256.5},
           {"/shardTokens", -1e19}}) {
    nlohmann::json odd = good;
    odd[nlohmann::json::json_pointer(pointer)] = value;
    auto refused = ParseManifest(odd.dump(), "m");
    INFO(pointer << " = " << value.dump());
    CHECK(refused.status().code() == StatusCode::kInvalidArgument);
    const std::string field = pointer.substr(pointer.rfind('/') + 1);
    CHECK(refused.status().message().find(field + " must be an integer") != std::string::npos);
  }
  CHECK(ParseManifest("{", "m").status().code() == StatusCode::kInvalidArgument);
  CHECK(ParseManifest("{}", "m").status().code() == StatusCode::kInvalidArgument);

  auto paths = ManifestShardPaths(r.manifest_path, "val");
  REQUIRE(paths.ok());
  CHECK(*paths == std::vector<std::string>{dir.path() + "/out/val_000000.bin"});
  CHECK(ManifestShardPaths(r.manifest_path, "test").status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("an output that cannot be written is a storage failure", "[data][prepare]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", "text\n");
  // Nothing can be created under /proc.
  auto r = Prepare({.inputs = {input}, .output_dir = "/proc/kiln-prepare-test"});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kUnavailable);
  CHECK(r.status().message().find("/proc/kiln-prepare-test") != std::string::npos);
}

TEST_CASE("prepare handles the fortunes corpus, and the loader reads it", "[data][prepare]") {
  if (!fs::is_directory(kCorpus)) {
    FAIL(std::string(kCorpus) +
         " is missing: scripts/setup.sh installs Debian's fortunes package, the test corpus");
  }
  testing::TempDir dir;
  std::string out = dir.path() + "/fortunes";
  PrepareResult r = MustPrepare({.inputs = {kCorpus}, .output_dir = out});
  const Manifest& m = r.manifest;
  CHECK(m.inputs.size() > 10);
  for (const auto& in : m.inputs) {
    INFO(in.path);
    CHECK_FALSE(in.path.ends_with(".dat"));
    CHECK_FALSE(in.path.ends_with(".u8"));
    CHECK(in.format == "fortunes");
  }
  int64_t docs = 0;
  for (const auto& in : m.inputs) docs += in.documents;
  CHECK(docs > 10000);
  CHECK(m.train.documents + m.val.documents == docs);
  CHECK(m.val.documents == std::llround(static_cast<double>(docs) * 0.01));
  CHECK(SplitDocs(out, m.train).size() == static_cast<std::size_t>(m.train.documents));
  CHECK(SplitDocs(out, m.val).size() == static_cast<std::size_t>(m.val.documents));

  for (const char* split : {"train", "val"}) {
    INFO(split);
    auto loader = DataLoader::OpenSplit(r.manifest_path, split, {.batch_size = 4, .seq_len = 64});
    REQUIRE(loader.ok());
    for (int step = 0; step < 3; ++step) {
      auto batch = loader->Next();
      REQUIRE(batch.ok());
      CHECK(ByteTokenizer().Decode(batch->inputs).ok());
    }
    CHECK(loader->position() == Position{0, 0, 3 * 4 * 64});
  }
}

// The command line, through the real binary.
ProcessResult RunWorker(std::vector<std::string> args) {
  args.insert(args.begin(), KILN_WORKER_BIN);
  auto r = RunProcess({.argv = args});
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("kiln-worker prepare rejects bad flags with exit 2 naming them",
          "[data][worker][cli][process]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", FortunesFile(SmallFortunes()));
  std::string out = dir.path() + "/out";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"--input", input, "--output", out, "--bogus"}, "unknown flag '--bogus'"},
      {{"--input", input, "--output", out, "stray"}, "unexpected argument 'stray'"},
      {{"--input", input, "--output", out, "--val-fraction", "abc"},
       "--val-fraction: \"abc\" is not a number"},
      {{"--input", input, "--output", out, "--val-fraction=0.7"},
       "--val-fraction: \"0.7\" is outside [0, 0.5]"},
      {{"--input", input, "--output", out, "--shard-tokens", "12x"},
       "--shard-tokens: \"12x\" is not an integer"},
      {{"--input", input, "--output", out, "--shard-tokens", "0"},
       "--shard-tokens: \"0\" is outside [1, 2147483647]"},
      {{"--input", input, "--output", out, "--format", "yaml"},
       "--format: \"yaml\" is not one of auto, fortunes, text"},
      {{"--input", input}, "missing --output"},
      {{"--output", out}, "missing --input"},
      {{"--input", input, "--output"}, "--output: needs a value"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"prepare"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    INFO(c.message);
    auto r = RunWorker(args);
    CHECK(r.exit_code == 2);
    CHECK(r.stderr_data.find("kiln-worker prepare: " + c.message) != std::string::npos);
    CHECK(r.stdout_data.empty());
  }
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("kiln-worker prepare exits 6 naming a missing or empty input",
          "[data][worker][cli][process]") {
  testing::TempDir dir;
  std::string missing = dir.path() + "/no-such-corpus";
  auto r = RunWorker({"prepare", "--input", missing, "--output", dir.path() + "/out"});
  CHECK(r.exit_code == 6);
  CHECK(r.stderr_data == "kiln-worker prepare: input " + missing + " does not exist (DataError)\n");

  std::string empty = dir.Write("empty", "");
  auto e = RunWorker({"prepare", "--input", empty, "--output", dir.path() + "/out"});
  CHECK(e.exit_code == 6);
  CHECK(e.stderr_data.find(empty) != std::string::npos);
}

TEST_CASE("kiln-worker prepare exits 3 when the output cannot be written",
          "[data][worker][cli][process]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", "text\n");
  auto r = RunWorker({"prepare", "--input", input, "--output", "/proc/kiln-prepare-test"});
  CHECK(r.exit_code == 3);
  CHECK(r.stderr_data.find("/proc/kiln-prepare-test") != std::string::npos);
  CHECK(r.stderr_data.find("(InfrastructureFault)") != std::string::npos);
}

TEST_CASE("kiln-worker prepare prints a one-line summary", "[data][worker][cli][process]") {
  testing::TempDir dir;
  std::string input = dir.Write("in", FortunesFile(SmallFortunes()));
  std::string out = dir.path() + "/out";
  auto r = RunWorker({"prepare", "--input", input, "--output=" + out, "--val-fraction", "0.1"});
  CHECK(r.exit_code == 0);
  CHECK(r.stderr_data.empty());
  CHECK(r.stdout_data.rfind("prepared 20 documents from 1 file: train 18 documents, ", 0) == 0);
  CHECK(r.stdout_data.find("; val 2 documents, ") != std::string::npos);
  CHECK(r.stdout_data.find("wrote " + out + "/manifest.json in ") != std::string::npos);
  CHECK(std::count(r.stdout_data.begin(), r.stdout_data.end(), '\n') == 1);
  CHECK(fs::exists(out + "/train_000000.bin"));

  auto help = RunWorker({"prepare", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.stdout_data.rfind("Usage: kiln-worker prepare", 0) == 0);
}

TEST_CASE("kiln-worker --help documents prepare and every exit code",
          "[data][worker][cli][process]") {
  auto r = RunWorker({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.stdout_data.find("prepare") != std::string::npos);
  for (const char* code :
       {"0  Success", "1  InternalError", "2  ConfigurationError", "3  InfrastructureFault",
        "4  CommunicationTimeout", "5  NumericsFault", "6  DataError"}) {
    CHECK(r.stdout_data.find(code) != std::string::npos);
  }
}

}  // namespace
}  // namespace kiln::data
