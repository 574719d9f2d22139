// The checkpoint half of the chaos suite (issue 19, point 3): the real
// kiln-worker trains a tiny model while the test, from a fixed seed, kills it
// at random moments and in the middle of checkpoint writes, flips bits in its
// newest checkpoint and fills the volume the checkpoints live on. After every start and at the end
// the test checks invariants against its own record of what it damaged: each start resumed from the
// newest intact checkpoint, a damaged one is never loaded and always reported, a full volume fails
// the run clearly and spares the last good checkpoint, a killed write's partial file does not
// outlive the next checkpoint, and the run ends bit-identical to one without faults (resume is
// exact: docs/engine.md).
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/inotify.h>
#include <sys/mount.h>

#include "base/file.h"
#include "base/subprocess.h"
#include "tests/support/background_process.h"
#include "tests/support/temp_dir.h"

namespace kiln::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kSeed = 19;
constexpr int64_t kSteps = 360;
constexpr int64_t kCheckpointEvery = 5;
constexpr int kKeep = 3;
// Five checkpoints of this model (about 1.5 MB each) fit, six do not: the
// kept ones and the one being written, and room for one partial file that a
// killed write left, not two.
constexpr uint64_t kVolumeBytes = 8 << 20;
constexpr int kFaultKinds = 5;
constexpr int kFaultsPerKind = 6;
// A bound on the loop, far above what the faults need (one start each, and
// one to finish): a worker that never completes fails the test.
constexpr int kMaxStarts = 3 * kFaultKinds * kFaultsPerKind;
// A start that runs this long without finishing is hung (a full run takes
// seconds); the test kills it and counts a violation.
constexpr auto kHung = std::chrono::seconds(120);

enum class Fault { kKill, kTornWrite, kFlipTensor, kFlipHeader, kStorageFull };

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kKill:
      return "kill";
    case Fault::kTornWrite:
      return "torn-write";
    case Fault::kFlipTensor:
      return "flip-tensor";
    case Fault::kFlipHeader:
      return "flip-header";
    case Fault::kStorageFull:
      return "full";
  }
  return "?";
}

std::vector<std::string> TrainArgs(const std::string& manifest, const std::string& ckpt_dir,
                                   const std::string& termination) {
  return {KILN_WORKER_BIN,
          "train",
          "--data",
          manifest,
          "--layers",
          "2",
          "--channels",
          "64",
          "--heads",
          "2",
          "--batch",
          "8",
          "--seq",
          "64",
          "--steps",
          std::to_string(kSteps),
          "--checkpoint-every",
          std::to_string(kCheckpointEvery),
          "--checkpoint-keep",
          std::to_string(kKeep),
          "--log-every",
          "1",
          "--checkpoint-dir",
          ckpt_dir,
          "--termination-message-path",
          termination};
}

// One thread: the run is the same bit for bit at any thread count
// (docs/engine.md), but a fixed count keeps the runs comparable in time.
const std::vector<std::string> kWorkerEnv = {"OMP_NUM_THREADS=1"};

std::string CheckpointPath(const std::string& dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld.ckpt", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

// The steps of the visible checkpoints in `dir`, and the hidden temporary
// files of writes in progress or abandoned.
struct Listing {
  std::set<int64_t> steps;
  std::set<std::string> temporaries;
};

Listing List(const std::string& dir) {
  Listing out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    long long step = 0;
    char tail[8] = {};
    if (name.size() == 18 && std::sscanf(name.c_str(), "step-%8lld.%5s", &step, tail) == 2 &&
        std::string(tail) == "ckpt") {
      out.steps.insert(step);
    } else if (name.rfind(".step-", 0) == 0) {
      out.temporaries.insert(name);
    }
  }
  return out;
}

// What one start of the worker printed and how it ended.
struct Start {
  int exit_code = -1;
  bool killed = false;  // By the test.
  std::string output;   // stdout and stderr.
  std::vector<json> events;
  json termination;  // The termination message; null when none.
  double seconds = 0;

  std::vector<json> Events(const std::string& kind) const {
    std::vector<json> out;
    for (const json& e : events) {
      if (e.value("event", "") == kind) out.push_back(e);
    }
    return out;
  }
};

// A start's output without its per-step progress lines.
std::string Digest(const std::string& output) {
  std::string out;
  size_t at = 0;
  while (at < output.size()) {
    size_t end = std::min(output.find('\n', at), output.size());
    const std::string_view line(output.data() + at, end - at);
    if (line.find("\"event\":\"step\"") == std::string_view::npos) {
      out.append(line).push_back('\n');
    }
    at = end + 1;
  }
  return out;
}

std::vector<json> ParseEvents(const std::string& output) {
  std::vector<json> out;
  size_t at = 0;
  while (at < output.size()) {
    size_t end = output.find('\n', at);
    if (end == std::string::npos) break;  // A line cut by the kill.
    json line = json::parse(output.substr(at, end - at), nullptr, false);
    if (!line.is_discarded() && line.is_object()) out.push_back(std::move(line));
    at = end + 1;
  }
  return out;
}

// When the test kills a start: once `ready` (a substring of its output)
// has appeared, `delay` later or, with `write_dir`, the moment the worker
// next creates a checkpoint's temporary file there (in the middle of a
// write).
struct KillPlan {
  std::string ready;
  Clock::duration delay{};
  std::string write_dir;
};

// The temporary checkpoint files created in a directory, as inotify reports
// them.
class TemporaryFileWatch {
 public:
  explicit TemporaryFileWatch(const std::string& dir)
      : fd_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    REQUIRE(fd_ >= 0);
    REQUIRE(inotify_add_watch(fd_, dir.c_str(), IN_CREATE) >= 0);
  }
  TemporaryFileWatch(const TemporaryFileWatch&) = delete;
  TemporaryFileWatch& operator=(const TemporaryFileWatch&) = delete;
  ~TemporaryFileWatch() { close(fd_); }

  // Waits up to `timeout` for creations; whether one was of a ".step-" file.
  bool Created(std::chrono::milliseconds timeout) {
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    alignas(inotify_event) char buffer[4096];
    bool created = false;
    ssize_t n;
    while ((n = read(fd_, buffer, sizeof(buffer))) > 0) {
      for (char* at = buffer; at < buffer + n;) {
        const auto* e = reinterpret_cast<const inotify_event*>(at);
        if (e->len > 0 && std::string_view(e->name).starts_with(".step-")) created = true;
        at += sizeof(inotify_event) + e->len;
      }
    }
    return created;
  }

 private:
  int fd_;
};

// Starts the worker and kills it (SIGKILL) as `plan` says; a worker that
// finishes first is not killed.
Start RunWorker(const std::vector<std::string>& argv, const std::string& output_file,
                const std::string& termination_file,
                const std::optional<KillPlan>& plan = std::nullopt) {
  std::error_code ignored;
  fs::remove(termination_file, ignored);
  std::optional<TemporaryFileWatch> watch;
  if (plan && !plan->write_dir.empty()) watch.emplace(plan->write_dir);
  const auto t0 = Clock::now();
  BackgroundProcess worker(argv, output_file, kWorkerEnv);
  bool armed = false;
  std::optional<Clock::time_point> kill_at;
  Start s;
  while (!worker.Poll()) {
    if (plan && !armed &&
        (plan->ready.empty() || worker.Output().find(plan->ready) != std::string::npos)) {
      armed = true;
      if (!watch) kill_at = Clock::now() + plan->delay;
    }
    // A creation before the kill is armed is not the write it waits for.
    const bool created = watch ? watch->Created(std::chrono::milliseconds(2)) : false;
    const auto now = Clock::now();
    if ((armed && created) || (kill_at && now >= *kill_at) || now - t0 > kHung) {
      worker.Signal(SIGKILL);
      s.killed = true;
      break;
    }
    if (!watch) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  s.exit_code = worker.Wait();
  if (s.killed && s.exit_code != 128 + SIGKILL) s.killed = false;  // It had exited by itself.
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  s.output = worker.Output();
  s.events = ParseEvents(s.output);
  if (auto text = ReadFile(termination_file); text.ok()) {
    s.termination = json::parse(*text, nullptr, false);
  }
  return s;
}

// A tmpfs of `bytes` mounted on `dir` for the object's lifetime (unmounted
// also when the test fails). Not mounted when this process may not mount:
// why_not() says why.
class Tmpfs {
 public:
  Tmpfs(std::string dir, uint64_t bytes) : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    if (geteuid() != 0) {
      why_not_ = "not running as root";
      return;
    }
    const std::string options = "size=" + std::to_string(bytes);
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      why_not_ = std::string("mount: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  ~Tmpfs() {
    // Lazily: a worker the test failed to reap must not keep the mount.
    if (mounted_ && umount2(dir_.c_str(), MNT_DETACH) != 0) {
      std::fprintf(stderr, "cannot unmount %s: %s\n", dir_.c_str(), std::strerror(errno));
    }
  }

  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }

  // Free bytes on the volume.
  uint64_t Available() const { return fs::space(dir_).available; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_not_;
};

std::string Slurp(const std::string& path) { return ReadFile(path).value_or(""); }

void Spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Flips one random bit of a tensor byte (past the header) of the file.
std::string FlipTensorBit(const std::string& path, std::mt19937& rng) {
  std::string bytes = Slurp(path);
  const size_t at = std::uniform_int_distribution<size_t>(bytes.size() / 2, bytes.size() - 1)(rng);
  const int bit = std::uniform_int_distribution<int>(0, 7)(rng);
  bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
  Spit(path, bytes);
  return "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " (tensor data)";
}

// Flips one random low bit of a digit in the header's step, data position,
// seed or model shape: the metadata beside the tensors, not their checksums.
// The header is the JSON after the 16-byte prefix (magic, version, length),
// its keys sorted, so those values come before "tensors".
std::string FlipHeaderBit(const std::string& path, std::mt19937& rng) {
  std::string bytes = Slurp(path);
  const size_t end = bytes.find("\"tensors\"");
  std::vector<size_t> digits;
  bool in_value = false;
  for (size_t i = 16; i < end && i < bytes.size(); ++i) {
    if (bytes[i] == ':') in_value = true;
    if (bytes[i] == ',' || bytes[i] == '{' || bytes[i] == '}') in_value = false;
    if (in_value && bytes[i] >= '0' && bytes[i] <= '9') digits.push_back(i);
  }
  REQUIRE(!digits.empty());
  const size_t at = digits[std::uniform_int_distribution<size_t>(0, digits.size() - 1)(rng)];
  const int bit = std::uniform_int_distribution<int>(0, 3)(rng);
  const size_t from = bytes.rfind('"', bytes.rfind("\":", at) - 1);
  const std::string field = bytes.substr(from, bytes.rfind("\":", at) + 1 - from);
  const char was = bytes[at];
  bytes[at] = static_cast<char>(bytes[at] ^ (1 << bit));
  Spit(path, bytes);
  return "header " + field + ": '" + std::string(1, was) + "' -> '" + std::string(1, bytes[at]) +
         "' at byte " + std::to_string(at);
}

TEST_CASE(
    "kills, flipped bits and a full volume: every start resumes from the newest intact "
    "checkpoint and the run ends bit-identical",
    "[chaos]") {
  TempDir dir;
  auto prepared =
      RunProcess({.argv = {KILN_WORKER_BIN, "prepare", "--input", "/usr/share/games/fortunes",
                           "--output", dir.path() + "/data"}});
  REQUIRE(prepared.ok());
  if (prepared->exit_code != 0) FAIL("prepare: " << prepared->stdout_data << prepared->stderr_data);
  const std::string manifest = dir.path() + "/data/manifest.json";
  const std::string termination = dir.path() + "/termination.json";

  // The reference: the same run without faults.
  const std::string ref_dir = dir.path() + "/reference";
  const Start reference = RunWorker(TrainArgs(manifest, ref_dir, termination),
                                    dir.path() + "/reference.log", termination);
  if (reference.exit_code != 0 || reference.Events("done").size() != 1) {
    FAIL("the reference run exited " << reference.exit_code << ":\n" << Digest(reference.output));
  }
  const json ref_done = reference.Events("done").front();
  REQUIRE(ref_done.at("steps") == kSteps);
  const std::string ref_final = Slurp(CheckpointPath(ref_dir, kSteps));
  REQUIRE(!ref_final.empty());
  std::printf("checkpoint chaos: reference run %.2f s, final loss %.9g, checkpoint %zu bytes\n",
              reference.seconds, ref_done.at("loss").get<double>(), ref_final.size());

  // The chaos run, into a size-limited volume. Declared after `dir`, so
  // unmounted before `dir` is removed.
  const std::string volume = dir.path() + "/volume";
  Tmpfs tmpfs(volume, kVolumeBytes);
  if (!tmpfs.mounted()) {
    WARN("no tmpfs for the checkpoints (" << tmpfs.why_not()
                                          << "): the storage-full fault is not injected");
  }
  const std::string ckpt = volume + "/ckpt";
  fs::create_directories(ckpt);

  std::mt19937 rng(kSeed);
  std::vector<Fault> deck;
  std::map<Fault, int> injected, not_injected;
  int torn_write_misses = 0;
  for (Fault f : {Fault::kKill, Fault::kTornWrite, Fault::kFlipTensor, Fault::kFlipHeader,
                  Fault::kStorageFull}) {
    if (f == Fault::kStorageFull && !tmpfs.mounted()) {
      not_injected[f] = kFaultsPerKind;
    } else {
      deck.insert(deck.end(), kFaultsPerKind, f);
    }
  }
  std::shuffle(deck.begin(), deck.end(), rng);

  std::vector<std::string> violations;
  auto violation = [&](const std::string& what) {
    violations.push_back(what);
    FAIL_CHECK(what);
  };

  // What the test knows: the checkpoints it damaged (by step) until the
  // worker writes that step afresh.
  std::set<int64_t> damaged;
  // The partial files of writes the test killed, and the start that left
  // each.
  std::map<std::string, int> leftovers;
  auto newest_intact = [&](const Listing& l) -> std::optional<int64_t> {
    for (auto it = l.steps.rbegin(); it != l.steps.rend(); ++it) {
      if (!damaged.count(*it)) return *it;
    }
    return std::nullopt;
  };

  std::optional<Start> last;
  int starts = 0;
  bool finished = false;
  size_t next_fault = 0;
  const auto chaos_t0 = Clock::now();
  while (!finished && starts < kMaxStarts) {
    ++starts;
    const Listing before = List(ckpt);
    const std::optional<int64_t> expected = newest_intact(before);
    // Every checkpoint damaged: the worker must refuse to start over (exit
    // 6, DataLoss); this start gets no fault of its own.
    const bool all_damaged = !before.steps.empty() && !expected;
    std::optional<Fault> fault = next_fault < deck.size() && !all_damaged
                                     ? std::optional<Fault>(deck[next_fault++])
                                     : std::nullopt;
    if (fault == Fault::kStorageFull && !before.temporaries.empty()) {
      // The worker removes what killed writes left before it writes, so the
      // volume would not be full for it: the storage-full fault waits until
      // they are gone, swapped with a later fault of another kind.
      auto later = std::find_if(deck.begin() + static_cast<std::ptrdiff_t>(next_fault), deck.end(),
                                [](Fault f) { return f != Fault::kStorageFull; });
      if (later != deck.end()) {
        std::swap(deck[next_fault - 1], *later);
        fault = deck[next_fault - 1];
      }
    }

    // Set up the fault that acts during the start.
    std::string filler;
    std::string last_good_bytes;
    bool full = false;
    if (fault == Fault::kStorageFull) {
      if (expected == kSteps || !before.temporaries.empty()) {
        ++not_injected[*fault];  // Nothing left to write, or see above.
      } else {
        // Leave less than half a checkpoint free: the next write fails.
        if (expected) last_good_bytes = Slurp(CheckpointPath(ckpt, *expected));
        const uint64_t slack =
            std::uniform_int_distribution<uint64_t>(0, ref_final.size() / 2)(rng);
        const uint64_t available = tmpfs.Available();
        filler = volume + "/filler";
        Spit(filler, std::string(available > slack ? available - slack : 0, 'x'));
        full = true;
        ++injected[*fault];
      }
    }
    std::optional<KillPlan> plan;
    const bool kills = fault && *fault != Fault::kStorageFull;
    if (kills) {
      // At a random step of this start's share of what is left (so that the
      // faults last the run): a kill a random part of a step after its
      // progress line (sometimes while a checkpoint is written); a torn
      // write as the worker creates that step's checkpoint file; a flip a
      // random part of a step after that checkpoint, then damaging it.
      const int64_t from = expected.value_or(0) + 1;
      const int64_t faults_left = static_cast<int64_t>(deck.size() - next_fault) + 1;
      const int64_t span = std::max<int64_t>(1, 2 * (kSteps - from) / (faults_left + 1));
      int64_t at = std::uniform_int_distribution<int64_t>(from, from + span - 1)(rng);
      if (*fault != Fault::kKill) {
        at = std::min(kSteps, (at + kCheckpointEvery - 1) / kCheckpointEvery * kCheckpointEvery);
      }
      auto step_line = [](int64_t step) {
        return "\"step\":" + std::to_string(step) + ",\"tokens";
      };
      plan.emplace();
      if (*fault == Fault::kKill) {
        plan->ready = step_line(at);
      } else if (*fault == Fault::kTornWrite) {
        // Armed a step before, so that the test sees the line in time.
        if (at - 1 >= from) plan->ready = step_line(at - 1);
        plan->write_dir = ckpt;
      } else {
        plan->ready = "\"event\":\"checkpoint\",\"path\":\"" + CheckpointPath(ckpt, at);
      }
      const double step_seconds = reference.seconds / kSteps;
      plan->delay = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
          std::uniform_real_distribution<double>(0, step_seconds)(rng)));
    }

    const std::string log = dir.path() + "/start-" + std::to_string(starts) + ".log";
    Start s = RunWorker(TrainArgs(manifest, ckpt, termination), log, termination, plan);
    const Listing after = List(ckpt);
    INFO("start " << starts << " (" << (fault ? FaultName(*fault) : "no fault") << "), output:\n"
                  << Digest(s.output));

    // Invariants of every start that got past restoring.
    const auto resumed = s.Events("resumed");
    const bool past_restore = !s.killed || !resumed.empty() || !s.Events("step").empty();
    if (resumed.size() > 1) {
      violation("start " + std::to_string(starts) + " resumed " + std::to_string(resumed.size()) +
                " times");
    }
    // Resumed from the newest intact checkpoint, or (a start that got past
    // restoring without resuming) there was none.
    const std::optional<int64_t> got =
        resumed.empty() ? std::nullopt
                        : std::optional<int64_t>(resumed.front().at("step").get<int64_t>());
    if ((!resumed.empty() || past_restore) && got != expected) {
      violation("start " + std::to_string(starts) + " resumed from step " +
                (got ? std::to_string(*got) : std::string("none")) +
                ", the newest intact checkpoint is step " +
                (expected ? std::to_string(*expected) : std::string("none")));
    }
    if (past_restore) {
      // Every damaged checkpoint newer than the one taken is reported, and
      // nothing the test did not damage is.
      std::set<std::string> reported;
      for (const json& w : s.Events("warning")) {
        const std::string m = w.value("message", "");
        if (m.find("skipping damaged checkpoint") == std::string::npos) continue;
        const size_t at = m.find("step-");
        long long step = -1;
        if (at != std::string::npos) std::sscanf(m.c_str() + at, "step-%8lld", &step);
        reported.insert(CheckpointPath(ckpt, step));
        if (!damaged.count(step)) {
          violation("start " + std::to_string(starts) +
                    " found damage the test did not cause: " + m);
        }
      }
      for (int64_t d : damaged) {
        if (before.steps.count(d) && (!expected || d > *expected) &&
            !reported.count(CheckpointPath(ckpt, d))) {
          violation("start " + std::to_string(starts) + " did not report the damaged checkpoint " +
                    CheckpointPath(ckpt, d));
        }
      }
      // No step is lost: training goes on from the step after the resumed one.
      const auto steps = s.Events("step");
      const int64_t from = expected.value_or(0) + 1;
      if (!steps.empty() && steps.front().at("step").get<int64_t>() != from) {
        violation("start " + std::to_string(starts) + " trained step " +
                  steps.front().at("step").dump() + " first, want " + std::to_string(from));
      }
    }
    // A checkpoint the worker wrote is intact again, whatever the test did
    // to the file of that step before.
    for (const json& c : s.Events("checkpoint")) damaged.erase(c.at("step").get<int64_t>());
    if (s.killed) {
      // A kill between a checkpoint's rename and its progress line: the file
      // is whole (written by rename), just unreported.
      for (int64_t step : after.steps) {
        if (!before.steps.count(step)) damaged.erase(step);
      }
    }
    for (auto it = damaged.begin(); it != damaged.end();) {
      it = after.steps.count(*it) ? std::next(it) : damaged.erase(it);  // Pruned.
    }
    // What a killed write left is gone once a later start has written a
    // checkpoint: otherwise each such file keeps what was written before the
    // kill (up to a checkpoint) on the volume, and enough of them fill it
    // for good.
    for (auto it = leftovers.begin(); it != leftovers.end();) {
      if (!after.temporaries.count(it->first)) {
        it = leftovers.erase(it);
      } else if (it->second < starts && !s.Events("checkpoint").empty()) {
        violation("start " + std::to_string(starts) + " wrote a checkpoint and left " + it->first +
                  ", the partial file of start " + std::to_string(it->second) +
                  "'s killed write, on the volume");
        it = leftovers.erase(it);
      } else {
        ++it;
      }
    }

    // The last good checkpoint outlives any fault: only `keep` newer ones
    // replace it.
    if (expected && !after.steps.count(*expected)) {
      int newer = 0;
      for (int64_t step : after.steps) newer += step > *expected && !damaged.count(step);
      if (newer < kKeep) {
        violation("start " + std::to_string(starts) + " removed the last good checkpoint (step " +
                  std::to_string(*expected) + ")");
      }
    }

    std::string outcome;
    if (full) {
      const std::string reason =
          s.termination.is_object() ? s.termination.value("reason", "") : std::string();
      if (s.exit_code != 3 || reason != "InfrastructureFault" ||
          s.output.find("No space left on device") == std::string::npos) {
        violation("start " + std::to_string(starts) + " on a full volume exited " +
                  std::to_string(s.exit_code) + " (reason \"" + reason +
                  "\"), want 3 (InfrastructureFault) saying \"No space left on device\"");
      }
      if (expected && Slurp(CheckpointPath(ckpt, *expected)) != last_good_bytes) {
        violation("start " + std::to_string(starts) +
                  " on a full volume changed the last good checkpoint, step " +
                  std::to_string(*expected));
      }
      for (int64_t step : after.steps) {
        if (!before.steps.count(step)) {
          violation("start " + std::to_string(starts) + " on a full volume left step " +
                    std::to_string(step) + " visible");
        }
      }
      for (const std::string& t : after.temporaries) {
        if (!before.temporaries.count(t)) {
          violation("start " + std::to_string(starts) + " on a full volume left " + t);
        }
      }
      fs::remove(filler);
      outcome = "exit " + std::to_string(s.exit_code) + ": " +
                (s.termination.is_object() ? s.termination.value("message", "") : std::string());
    } else if (kills && s.killed) {
      ++injected[*fault];
      outcome = "killed after " + std::to_string(s.seconds) + " s";
      if (*fault == Fault::kTornWrite) {
        std::vector<std::string> left;
        for (const std::string& t : after.temporaries) {
          if (!before.temporaries.count(t)) left.push_back(t);
        }
        if (left.empty()) {
          // The write finished before the kill (the test was not scheduled
          // in time): a plain kill. Tried again, a bounded number of times.
          --injected[*fault];
          outcome += ", after the write it waited for had finished";
          if (torn_write_misses++ < kFaultsPerKind) {
            deck.insert(deck.begin() + static_cast<std::ptrdiff_t>(next_fault), *fault);
            outcome += " (tried again)";
          } else {
            ++not_injected[*fault];
          }
        }
        for (const std::string& t : left) {
          leftovers[t] = starts;
          std::error_code ec;
          outcome += ", in the middle of a write: " + t + " left (" +
                     std::to_string(fs::file_size(fs::path(ckpt) / t, ec)) + " bytes)";
        }
      } else if (*fault != Fault::kKill) {
        const Listing now = List(ckpt);
        REQUIRE(!now.steps.empty());  // The flip waited for a checkpoint.
        const int64_t newest = *now.steps.rbegin();
        const std::string path = CheckpointPath(ckpt, newest);
        outcome +=
            "; flipped " +
            (*fault == Fault::kFlipTensor ? FlipTensorBit(path, rng) : FlipHeaderBit(path, rng)) +
            " in " + fs::path(path).filename().string();
        damaged.insert(newest);
      }
    } else {
      if (kills) ++not_injected[*fault];  // The run ended first.
      outcome = "exit " + std::to_string(s.exit_code);
      if (all_damaged) {
        if (s.exit_code != 6 || s.output.find("is damaged") == std::string::npos) {
          violation("start " + std::to_string(starts) + " with every checkpoint damaged exited " +
                    std::to_string(s.exit_code) + ", want 6 (DataLoss) saying so");
        }
        // What an operator would do: remove them, and start over.
        for (int64_t d : damaged) fs::remove(CheckpointPath(ckpt, d));
        damaged.clear();
        outcome += " (every checkpoint damaged; the test removes them)";
        finished = s.exit_code == 0;
      } else if (s.exit_code == 0) {
        finished = true;
      } else {
        violation("start " + std::to_string(starts) + " failed by itself, exit " +
                  std::to_string(s.exit_code));
        // Take away what the test damaged, so that the run can go on and
        // the other invariants still be checked.
        for (int64_t d : damaged) fs::remove(CheckpointPath(ckpt, d));
        damaged.clear();
      }
    }
    std::printf("checkpoint chaos: start %d: %s; resumed from %s (expected %s); %s\n", starts,
                fault ? FaultName(*fault) : "no fault",
                resumed.empty() ? "none" : resumed.front().at("step").dump().c_str(),
                expected ? std::to_string(*expected).c_str() : "none", outcome.c_str());
    std::fflush(stdout);
    last = std::move(s);
  }
  const double chaos_seconds = std::chrono::duration<double>(Clock::now() - chaos_t0).count();

  if (!finished) violation("the run did not complete in " + std::to_string(kMaxStarts) + " starts");
  if (finished && last->Events("done").size() != 1) {
    violation("the last start exited 0 without one done line");
  } else if (finished) {
    const json done = last->Events("done").front();
    if (done.at("steps") != kSteps) {
      violation("the run ended at step " + done.at("steps").dump());
    }
    if (Slurp(CheckpointPath(ckpt, kSteps)) != ref_final) {
      violation("the final checkpoint differs from the reference run's");
    }
    // The done line's loss is the last step's when this start trained it.
    if (!last->Events("step").empty() && done.at("loss") != ref_done.at("loss")) {
      violation("the final loss " + done.at("loss").dump() + " differs from the reference's " +
                ref_done.at("loss").dump());
    }
  }
  if (finished && !List(ckpt).temporaries.empty()) {
    violation("the run ended with " + std::to_string(List(ckpt).temporaries.size()) +
              " partial files of killed writes in the checkpoint directory");
  }
  if (finished) {
    // A restart after the end (a pod restarted before the operator saw it
    // finish) resumes at the last step, trains nothing, rewrites nothing and
    // claims no loss it did not measure.
    const std::string final_bytes = Slurp(CheckpointPath(ckpt, kSteps));
    Start again =
        RunWorker(TrainArgs(manifest, ckpt, termination), dir.path() + "/again.log", termination);
    INFO("the restart after the end:\n" << again.output);
    ++starts;
    const auto resumed = again.Events("resumed");
    const auto done = again.Events("done");
    if (again.exit_code != 0 || resumed.size() != 1 || resumed[0].at("step") != kSteps ||
        !again.Events("step").empty() || !again.Events("checkpoint").empty() || done.size() != 1 ||
        done[0].at("steps") != kSteps) {
      violation("a restart after the end did not resume at step " + std::to_string(kSteps) +
                " and exit 0 without training");
    } else if (done[0].contains("loss")) {
      violation("a restart after the end reported a loss it did not measure: " + done[0].dump());
    }
    if (Slurp(CheckpointPath(ckpt, kSteps)) != final_bytes) {
      violation("a restart after the end changed the final checkpoint");
    }
  }
  int total = 0;
  for (const auto& [f, n] : injected) total += n;
  std::printf(
      "checkpoint chaos: %d faults (kill %d, torn write %d (%d missed), flip %d (tensor %d, header "
      "%d), full %d; not injected: kill %d, torn write %d, flip %d, full %d), %d restarts, %zu "
      "violations, %.1f s (reference %s s)\n",
      total, injected[Fault::kKill], injected[Fault::kTornWrite], torn_write_misses,
      injected[Fault::kFlipTensor] + injected[Fault::kFlipHeader], injected[Fault::kFlipTensor],
      injected[Fault::kFlipHeader], injected[Fault::kStorageFull], not_injected[Fault::kKill],
      not_injected[Fault::kTornWrite],
      not_injected[Fault::kFlipTensor] + not_injected[Fault::kFlipHeader],
      not_injected[Fault::kStorageFull], starts - 1, violations.size(), chaos_seconds,
      std::to_string(reference.seconds).c_str());
  std::fflush(stdout);
  CHECK(violations.empty());
}

}  // namespace
}  // namespace kiln::testing
