// AtomicFile: readers see the old file or the whole new one; a writer that
// never commits leaves nothing once it goes, and the name of a temporary
// file that a killed writer left names the file it was writing.
#include "worker/data/atomic_file.h"

#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "tests/support/temp_dir.h"

namespace kiln::data {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

TEST_CASE("an atomic file appears whole on commit, and its temporary file names it",
          "[worker][data]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/step-00000005.ckpt";
  {
    auto file = AtomicFile::Create(path);
    REQUIRE(file.ok());
    REQUIRE(file->Append("abc", 3).ok());
    const auto names = Names(dir.path());
    REQUIRE(names.size() == 1);
    CHECK(AtomicFile::TargetOfTemporary(names[0]) == "step-00000005.ckpt");
    CHECK_FALSE(fs::exists(path));
    REQUIRE(file->Commit().ok());
  }
  CHECK(ReadFile(path).value_or("") == "abc");
  CHECK(Names(dir.path()) == std::vector<std::string>{"step-00000005.ckpt"});

  SECTION("a writer that never commits leaves nothing") {
    {
      auto file = AtomicFile::Create(path);
      REQUIRE(file.ok());
      REQUIRE(file->Append("xyz", 3).ok());
    }
    CHECK(ReadFile(path).value_or("") == "abc");
    CHECK(Names(dir.path()) == std::vector<std::string>{"step-00000005.ckpt"});
  }
}

TEST_CASE("only temporary files' names have a target", "[worker][data]") {
  CHECK(AtomicFile::TargetOfTemporary(".a.bin.tmp-Xy12Ab") == "a.bin");
  CHECK(AtomicFile::TargetOfTemporary(".fence.json.tmp-000000") == "fence.json");
  for (const std::string name : {"a.bin", ".a.bin", "a.bin.tmp-Xy12Ab", ".a.bin.tmp-Xy12A",
                                 ".a.bin.tmp-Xy12Abc", ".tmp-Xy12Ab", ""}) {
    INFO(name);
    CHECK_FALSE(AtomicFile::TargetOfTemporary(name));
  }
}

}  // namespace
}  // namespace kiln::data
