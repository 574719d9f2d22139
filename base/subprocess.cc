#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include <sys/wait.h>

#include "base/errno_status.h"

extern char** environ;

namespace kiln {
namespace {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read_end;
  Fd write_end;
};

Status MakePipe(Pipe& p) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2", "");
  p.read_end.Reset(fds[0]);
  p.write_end.Reset(fds[1]);
  return Status::Ok();
}

std::vector<std::string> MergedEnvironment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string_view::npos && extra.count(std::string(entry.substr(0, eq))) > 0) continue;
    env.emplace_back(entry);
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Blocks SIGPIPE for the calling thread while alive, so writing to a child that
// closed its stdin yields EPIPE instead of killing this process; a SIGPIPE
// raised meanwhile is consumed before the old mask returns.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;
  ~ScopedSigpipeBlock() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      timespec zero{0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

int DecodeWaitStatus(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

// Spawns options.argv (looked up on PATH when it holds no '/') with
// options.env over this process's environment; the pid, or the Status of a
// program that cannot be started.
StatusOr<pid_t> Spawn(const ProcessOptions& options, const posix_spawn_file_actions_t* actions,
                      const posix_spawnattr_t* attr) {
  std::vector<std::string> argv_storage = options.argv;
  std::vector<std::string> env_storage = MergedEnvironment(options.env);
  std::vector<char*> argv = CStrings(argv_storage);
  std::vector<char*> envp = CStrings(env_storage);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], actions, attr, argv.data(), envp.data());
  if (rc != 0) return ErrnoStatus(rc, "cannot start", "'" + options.argv[0] + "'");
  return pid;
}

// Waits for `pid` to exit (through EINTR); its exit code, 128+signal when
// killed.
StatusOr<int> WaitForExit(pid_t pid) {
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return ErrnoStatus(errno, "waitpid", "");
  }
  return DecodeWaitStatus(wstatus);
}

}  // namespace

StatusOr<ProcessResult> RunProcess(const ProcessOptions& options) {
  if (options.argv.empty()) return Status::InvalidArgument("RunProcess: empty argv");
  Pipe in, out, err;
  KILN_RETURN_IF_ERROR(MakePipe(in));
  KILN_RETURN_IF_ERROR(MakePipe(out));
  KILN_RETURN_IF_ERROR(MakePipe(err));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.read_end.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.write_end.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write_end.get(), STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group, so a timeout kills the program and everything it started.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);

  const StatusOr<pid_t> spawned = Spawn(options, &actions, &attr);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  KILN_RETURN_IF_ERROR(spawned.status());
  const pid_t pid = *spawned;
  in.read_end.Reset();
  out.write_end.Reset();
  err.write_end.Reset();

  ScopedSigpipeBlock sigpipe_block;  // After the spawn: the child keeps the default mask.
  ProcessResult result;
  std::string_view to_write = options.stdin_data;
  if (to_write.empty()) in.write_end.Reset();
  fcntl(in.write_end.get(), F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  bool timed_out = false;
  char buf[16384];
  while (out.read_end.get() >= 0 || err.read_end.get() >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[3] = {{out.read_end.get(), POLLIN, 0},
                     {err.read_end.get(), POLLIN, 0},
                     {in.write_end.get(), POLLOUT, 0}};
    int n = poll(fds, 3, static_cast<int>(left.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      kill(-pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return ErrnoStatus(errno, "poll", "");
    }
    if (fds[2].revents != 0) {
      ssize_t w = write(in.write_end.get(), to_write.data(), to_write.size());
      if (w > 0) to_write.remove_prefix(static_cast<size_t>(w));
      if (w < 0 && errno != EAGAIN) to_write = {};
      if (to_write.empty()) in.write_end.Reset();
    }
    Fd* readers[2] = {&out.read_end, &err.read_end};
    std::string* sinks[2] = {&result.stdout_data, &result.stderr_data};
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      ssize_t r = read(readers[i]->get(), buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        readers[i]->Reset();
      }
    }
  }
  if (timed_out) {
    kill(-pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return Status::DeadlineExceeded("'" + options.argv[0] + "' did not finish within " +
                                    std::to_string(options.timeout.count()) + " ms");
  }
  KILN_ASSIGN_OR_RETURN(result.exit_code, WaitForExit(pid));
  return result;
}

StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const ProcessOptions& options,
                                                        const std::string& output_file) {
  if (options.argv.empty()) return Status::InvalidArgument("Subprocess::Start: empty argv");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  const StatusOr<pid_t> spawned = Spawn(options, &actions, nullptr);
  posix_spawn_file_actions_destroy(&actions);
  KILN_RETURN_IF_ERROR(spawned.status());
  return std::unique_ptr<Subprocess>(new Subprocess(*spawned));
}

Subprocess::~Subprocess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Wait();
  }
}

void Subprocess::Signal(int signal) const {
  if (pid_ > 0) kill(pid_, signal);
}

std::optional<int> Subprocess::Poll() {
  if (pid_ <= 0) return exit_code_;
  int wstatus = 0;
  if (waitpid(pid_, &wstatus, WNOHANG) != pid_) return std::nullopt;
  pid_ = -1;
  exit_code_ = DecodeWaitStatus(wstatus);
  return exit_code_;
}

int Subprocess::Wait() {
  if (pid_ <= 0) return exit_code_;
  const StatusOr<int> code = WaitForExit(pid_);
  pid_ = -1;
  if (code.ok()) exit_code_ = *code;  // Else unknown: -1.
  return exit_code_;
}

}  // namespace kiln
