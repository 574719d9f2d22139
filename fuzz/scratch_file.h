// ScratchFile: for harnesses whose parser reads a path. One file per process
// (libFuzzer runs one input at a time), in a folder of its own under
// $TMPDIR, removed at exit. Not thread-safe.
#ifndef KILN_FUZZ_SCRATCH_FILE_H_
#define KILN_FUZZ_SCRATCH_FILE_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace kiln::fuzz {

class ScratchFile {
 public:
  // `name` is the file's name inside the folder (e.g. "step-00000001.ckpt").
  explicit ScratchFile(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    dir_ = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
           ("kiln-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / name).string();
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);  // Best effort: it is only scratch.
  }

  // Replaces the file's bytes with `data`.
  void Write(const uint8_t* data, size_t size) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }

  const std::string& path() const { return path_; }
  std::string dir() const { return dir_.string(); }

 private:
  std::filesystem::path dir_;
  std::string path_;
};

}  // namespace kiln::fuzz

#endif  // KILN_FUZZ_SCRATCH_FILE_H_
