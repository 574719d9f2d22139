#include "worker/cmd/train_command.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>

#include "base/duration.h"
#include "base/http_server.h"
#include "base/stop_signal.h"
#include "kernels/cpu/cpu_features.h"
#include "worker/cmd/device_flags.h"
#include "worker/data/checksum.h"
#include "worker/dist/dist_env.h"
#include "worker/dist/tcp_communicator.h"
#include "worker/exit_codes.h"
#include "worker/train/train_metrics.h"
#include "worker/train/trainer.h"
#if KILN_WORKER_CUDA
#include "worker/dist/nccl_communicator.h"
#include "worker/train/cuda_train_model.h"
#endif

namespace kiln::worker {
namespace {

constexpr const char* kUsage =
    "Usage: kiln-worker train --data MANIFEST [options]\n"
    "\n"
    "Trains kiln's GPT on the CPU or a GPU from shards written by 'kiln-worker\n"
    "prepare', printing one JSON progress object per line on stdout.\n"
    "\n"
    "Device:\n"
    "  --device cpu|cuda (cpu) Where to train. cuda: bf16 mixed precision on one GPU\n"
    "                          per rank, gradients summed with NCCL (checkpoints are\n"
    "                          the same format on both).\n"
    "  --cuda-device N         The GPU of this rank (default: LOCAL_RANK, else 0).\n"
    "Model:\n"
    "  --layers N (4)  --heads N (4)  --channels N (128)\n"
    "Data and batch:\n"
    "  --data PATH             The manifest.json of 'kiln-worker prepare' (required).\n"
    "  --batch N (4)           Sequences per micro-batch.\n"
    "  --seq N (64)            Tokens per sequence (also the context length).\n"
    "  --grad-accum N (1)      Micro-batches per optimizer step.\n"
    "Optimisation:\n"
    "  --steps N (100)  --lr X (3e-4)  --warmup N (0)  --min-lr-ratio X (0.1)\n"
    "  --weight-decay X (0.1)  --grad-clip X (1.0; 0 disables)  --seed N (1337)\n"
    "  --loss-spike-factor X   Stop with a numerics fault when the loss exceeds X times\n"
    "                          its recent average (default 0: off).\n"
    "Checkpoints:\n"
    "  --checkpoint-dir DIR    Save here and resume from the newest intact checkpoint.\n"
    "  --checkpoint-every N (100)  --checkpoint-keep N (3)\n"
    "  --termination-message-path PATH\n"
    "                          Where to write the outcome as JSON on exit (default\n"
    "                          /dev/termination-log when it exists, as in a pod).\n"
    "Reporting:\n"
    "  --log-every N (1)  --val-every N (0: at the end)  --val-batches N (4)\n"
    "  --metrics-bind-address ADDR\n"
    "                          Serve Prometheus /metrics and /healthz here, e.g. :9400\n"
    "                          (default: off).\n"
    "  --peak-tflops X         This process's peak TFLOP/s for the MFU figure (default:\n"
    "                          estimated from the CPU's cores, clock and vector width,\n"
    "                          or the GPU's dense bf16 rate at its maximum clock).\n"
    "Data parallel (ranks from WORLD_SIZE, RANK or JOB_COMPLETION_INDEX, MASTER_ADDR,\n"
    "MASTER_PORT; --batch is per rank, so the global batch is WORLD_SIZE x --batch):\n"
    "  --comm-timeout D (10m)  A collective fails when no data moves for this long;\n"
    "                          it must exceed the longest pause between steps\n"
    "                          (rank 0 writing a checkpoint).\n"
    "  --rendezvous-timeout D (10m)  How long to wait for every rank to join.\n"
    "\n"
    "Exit codes: 0 success, 1 internal error, 2 bad flags or configuration,\n"
    "3 storage unavailable or full, 4 communication timeout (a peer died or hung),\n"
    "5 numerics fault (NaN/Inf loss or gradient, or a loss spike), 6 data missing,\n"
    "unreadable or malformed.\n"
    "SIGTERM stops after the current step, saving a checkpoint (exit 0).\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-worker train: %s\n\nRun 'kiln-worker train --help' for usage.\n",
               why.c_str());
  return ToInt(ExitCode::kConfigurationError);
}

// Numerics and communication faults first (details on the status); the rest
// as every command.
ExitCode TrainExitCode(const Status& s) {
  if (train::IsNumericsFault(s)) return ExitCode::kNumericsFault;
  if (dist::IsCommunicationFault(s)) return ExitCode::kCommunicationTimeout;
  return ExitCodeFor(s);
}

// What every rank of a data-parallel job must agree on; rank 0 refuses a
// rank whose values differ. The data by the manifest's checksum, so ranks
// may mount it at different paths.
StatusOr<nlohmann::json> JobFingerprint(const train::TrainOptions& o, const std::string& device) {
  KILN_ASSIGN_OR_RETURN(std::string data, data::Sha256File(o.manifest));
  return nlohmann::json{{"device", device},
                        {"layers", o.model.num_layers},
                        {"heads", o.model.num_heads},
                        {"channels", o.model.channels},
                        {"contextLength", o.model.max_seq_len},
                        {"batch", o.batch_size},
                        {"seq", o.seq_len},
                        {"gradAccum", o.grad_accumulation},
                        {"steps", o.steps},
                        {"lr", o.learning_rate},
                        {"warmup", o.warmup_steps},
                        {"minLrRatio", o.min_lr_ratio},
                        {"weightDecay", o.weight_decay},
                        {"gradClip", o.grad_clip},
                        {"lossSpikeFactor", o.loss_spike_factor},
                        {"seed", o.seed},
                        {"valEvery", o.val_every},
                        {"valBatches", o.val_batches},
                        {"checkpointEvery", o.checkpoint_every},
                        {"dataManifestSha256", data}};
}

// Kubernetes shows this file's content as the container's termination
// message (kubectl describe, and the pod status the operator reads); it keeps
// at most 4096 bytes.
constexpr const char* kKubernetesTerminationLog = "/dev/termination-log";

void WriteTerminationMessage(const std::string& path, ExitCode code, const Status& s,
                             int64_t last_step) {
  std::string message = s.ok() ? "training finished" : s.ToString();
  if (message.size() > 3000) message = message.substr(0, 3000) + "...";
  nlohmann::json j = {{"exitCode", ToInt(code)},
                      {"reason", ExitCodeName(code)},
                      {"message", message},
                      {"lastStep", last_step}};
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  if (!out) std::fprintf(stderr, "kiln-worker train: cannot write %s\n", path.c_str());
}

}  // namespace

int RunTrainCommand(int argc, char** argv) {
  // First, before any thread exists (OpenMP's, the HTTP server's): threads
  // inherit the blocked SIGTERM, so only the stop-signal thread receives it.
  StopSignal& stop = StopSignal::Install();
  std::string termination_path;
  if (std::filesystem::exists(kKubernetesTerminationLog)) {
    termination_path = kKubernetesTerminationLog;
  }
  train::TrainOptions o;
  o.peak_flops = -1;  // Estimated for the device unless given.
  std::string device = "cpu";
  int cuda_device = -1;
  dist::TcpOptions tcp;
  std::string metrics_address;
  o.model.num_layers = 4;
  o.model.num_heads = 4;
  o.model.channels = 128;
  o.model.max_seq_len = 0;  // Defaults to --seq.
  // Each numeric flag writes one field.
  std::map<std::string, std::function<void(double)>> numeric = {
      {"layers", [&](double v) { o.model.num_layers = static_cast<int>(v); }},
      {"heads", [&](double v) { o.model.num_heads = static_cast<int>(v); }},
      {"channels", [&](double v) { o.model.channels = static_cast<int>(v); }},
      {"batch", [&](double v) { o.batch_size = static_cast<int>(v); }},
      {"seq", [&](double v) { o.seq_len = static_cast<int>(v); }},
      {"grad-accum", [&](double v) { o.grad_accumulation = static_cast<int>(v); }},
      {"steps", [&](double v) { o.steps = static_cast<int64_t>(v); }},
      {"lr", [&](double v) { o.learning_rate = v; }},
      {"warmup", [&](double v) { o.warmup_steps = static_cast<int64_t>(v); }},
      {"min-lr-ratio", [&](double v) { o.min_lr_ratio = v; }},
      {"weight-decay", [&](double v) { o.weight_decay = v; }},
      {"grad-clip", [&](double v) { o.grad_clip = v; }},
      {"loss-spike-factor", [&](double v) { o.loss_spike_factor = v; }},
      {"seed", [&](double v) { o.seed = static_cast<uint64_t>(v); }},
      {"log-every", [&](double v) { o.log_every = static_cast<int64_t>(v); }},
      {"val-every", [&](double v) { o.val_every = static_cast<int64_t>(v); }},
      {"val-batches", [&](double v) { o.val_batches = static_cast<int>(v); }},
      {"checkpoint-every", [&](double v) { o.checkpoint_every = static_cast<int64_t>(v); }},
      {"checkpoint-keep", [&](double v) { o.checkpoint_keep = static_cast<int>(v); }},
      {"peak-tflops", [&](double v) { o.peak_flops = v * 1e12; }},
      {"cuda-device", [&](double v) { cuda_device = static_cast<int>(v); }},
  };
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return ToInt(ExitCode::kSuccess);
    }
    if (arg.rfind("--", 0) != 0) return Usage("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= argc) return Usage("flag '--" + name + "' needs a value");
      value = argv[++i];
    }
    if (name == "data") {
      o.manifest = value;
      continue;
    }
    if (name == "device") {
      device = value;
      continue;
    }
    if (name == "checkpoint-dir") {
      o.checkpoint_dir = value;
      continue;
    }
    if (name == "termination-message-path") {
      termination_path = value;
      continue;
    }
    if (name == "metrics-bind-address") {
      if (auto parsed = ParseBindAddress(value); !parsed.ok()) {
        return Usage("--metrics-bind-address: " + parsed.status().message());
      }
      metrics_address = value;
      continue;
    }
    if (name == "comm-timeout" || name == "rendezvous-timeout") {
      auto d = ParseDuration(value);
      if (!d.ok() || d->count() <= 0) {
        return Usage("--" + name + ": '" + value + "' is not a positive duration (e.g. 30s, 10m)");
      }
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
      (name == "comm-timeout" ? tcp.timeout : tcp.rendezvous_timeout) = ms;
      continue;
    }
    auto it = numeric.find(name);
    if (it == numeric.end()) return Usage("unknown flag '--" + name + "'");
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != value.size() || value.empty()) {
      return Usage("--" + name + ": '" + value + "' is not a number");
    }
    it->second(v);
  }
  if (o.manifest.empty()) return Usage("--data is required (a manifest.json from prepare)");
  if (o.model.max_seq_len == 0) o.model.max_seq_len = o.seq_len;
  int64_t last_step = 0;  // The last step whose update was applied.
  auto finish = [&](const Status& s) {
    const ExitCode code = TrainExitCode(s);
    if (!s.ok()) std::fprintf(stderr, "kiln-worker train: %s\n", s.ToString().c_str());
    if (!termination_path.empty()) WriteTerminationMessage(termination_path, code, s, last_step);
    return ToInt(code);
  };
  auto chosen = ResolveDevice(device, cuda_device);
  if (!chosen.ok()) {
    if (chosen.status().code() == StatusCode::kInvalidArgument) {
      return Usage(chosen.status().message());
    }
    return finish(chosen.status());
  }
  auto env = dist::DistEnvFromEnvironment();
  if (!env.ok()) return finish(env.status());
  tcp.env = *env;
#if KILN_WORKER_CUDA
  if (chosen->cuda && o.peak_flops < 0) {
    o.peak_flops = train::EstimatedCudaPeakFlops(chosen->cuda_device);
  }
#endif
  if (o.peak_flops < 0) o.peak_flops = kernels::cpu::EstimatedPeakFlops();
  std::unique_ptr<dist::Communicator> comm;
  if (env->world_size > 1) {
    // Check the options before the rendezvous: a bad flag is this rank's error.
    if (Status check = train::Trainer::CheckOptions(o); !check.ok()) return finish(check);
    auto fingerprint = JobFingerprint(o, device);
    if (!fingerprint.ok()) return finish(fingerprint.status());
    tcp.config = *fingerprint;
    auto connected = dist::ConnectTcp(tcp);
    if (!connected.ok()) return finish(connected.status());
    comm = std::move(*connected);
  }
  train::TrainModelFactory make_model;  // Null: the CPU model.
#if KILN_WORKER_CUDA
  std::unique_ptr<dist::Communicator> nccl;
  if (chosen->cuda) {
    const int gpu = chosen->cuda_device;
    if (comm != nullptr) {
      // Gradients move GPU to GPU; the TCP ring keeps the control traffic.
      auto connected = dist::ConnectNccl(*comm, gpu, tcp.timeout);
      if (!connected.ok()) return finish(connected.status());
      nccl = std::move(*connected);
    }
    make_model = [&, gpu](const model::GptConfig& c, uint64_t seed) {
      return train::NewCudaTrainModel(c, seed, gpu, nccl.get());
    };
  }
#endif
  auto trainer = train::Trainer::Create(o, comm.get(), make_model);
  if (!trainer.ok()) return finish(trainer.status());
  train::TrainMetrics metrics(o.steps, env->rank);
  std::unique_ptr<HttpServer> server;
  if (!metrics_address.empty()) {
    auto started = HttpServer::Start(
        {.bind_address = metrics_address},
        {HttpRoute::Get("/metrics",
                        [&metrics](const HttpRequest&) {
                          return HttpReply{
                              .status = 200,
                              .content_type = "text/plain; version=0.0.4; charset=utf-8",
                              .body = metrics.Scrape()};
                        }),
         HttpRoute::Get("/healthz", [](const HttpRequest&) { return HttpReply{.body = "ok"}; })});
    if (!started.ok()) return finish(started.status());
    server = std::move(*started);
  }
  Status s = (*trainer)->Run(
      [&](const nlohmann::json& line) {
        metrics.Observe(line);
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      },
      &stop.requested());
  if (server) server->Drain(std::chrono::seconds(1));  // A scrape in flight may finish.
  last_step = (*trainer)->completed_step();
  return finish(s);
}

}  // namespace kiln::worker
