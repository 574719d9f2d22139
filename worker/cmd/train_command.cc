#include "worker/cmd/train_command.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>

#include "base/flags.h"
#include "base/http_server.h"
#include "base/stop_signal.h"
#include "kernels/cpu/cpu_features.h"
#include "worker/cmd/device_flags.h"
#include "worker/data/checksum.h"
#include "worker/dist/dist_env.h"
#include "worker/dist/tcp_communicator.h"
#include "worker/exit_codes.h"
#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"
#include "worker/train/fence.h"
#include "worker/train/train_metrics.h"
#include "worker/train/trainer.h"
#if KILN_WORKER_CUDA
#include "worker/dist/nccl_communicator.h"
#include "worker/train/cuda_train_model.h"
#endif

namespace kiln::worker {
namespace {

constexpr const char* kSynopsis =
    "Usage: kiln-worker train --data MANIFEST [options]\n"
    "\n"
    "Trains kiln's GPT on the CPU or a GPU from shards written by 'kiln-worker\n"
    "prepare', printing one JSON progress object per line on stdout.\n";

constexpr const char* kEpilogue =
    "Data parallel: ranks from WORLD_SIZE, RANK or JOB_COMPLETION_INDEX, MASTER_ADDR,\n"
    "MASTER_PORT; --batch is per rank, so the global batch is WORLD_SIZE x --batch.\n"
    "\n"
    "Exit codes: 0 success, 1 internal error, 2 bad flags or configuration,\n"
    "3 storage unavailable or full, 4 communication timeout (a peer died or hung),\n"
    "5 numerics fault (NaN/Inf loss or gradient, or a loss spike), 6 data missing,\n"
    "unreadable or malformed, 8 superseded (a newer attempt holds the --fence).\n"
    "SIGTERM stops after the current step, saving a checkpoint (exit 0).\n";

// Numerics and communication faults first (details on the status); the rest
// as every command.
ExitCode TrainExitCode(const Status& s) {
  if (train::IsNumericsFault(s)) return ExitCode::kNumericsFault;
  if (train::IsSuperseded(s)) return ExitCode::kSuperseded;
  if (dist::IsCommunicationFault(s)) return ExitCode::kCommunicationTimeout;
  return ExitCodeFor(s);
}

// What every rank of a data-parallel job must agree on; rank 0 refuses a
// rank whose values differ. The data by the manifest's checksum, so ranks
// may mount it at different paths.
StatusOr<nlohmann::json> JobFingerprint(const train::TrainOptions& o, const std::string& device) {
  std::string data;
  if (storage::IsS3Uri(o.manifest)) {
    KILN_ASSIGN_OR_RETURN(storage::OpenedStore opened, storage::OpenS3Store(o.manifest));
    KILN_ASSIGN_OR_RETURN(std::string text, opened.store->Get(opened.key));
    data = data::Sha256Hex(text);
  } else {
    KILN_ASSIGN_OR_RETURN(data, data::Sha256File(o.manifest));
  }
  return nlohmann::json{
      {"device", device},
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
      {"rewindBeforeStep", o.rewind_before_step},
      {"skipDataThroughStep", o.skip_data_through_step},
      {"seed", o.seed},
      {"valEvery", o.val_every},
      {"valBatches", o.val_batches},
      {"checkpointEvery", o.checkpoint_every},
      {"fence", o.fence ? o.fence->job + ":" + std::to_string(o.fence->attempt) : std::string()},
      {"dataManifestSha256", data}};
}

// Kubernetes shows this file's content as the container's termination
// message (kubectl describe, and the pod status the operator reads); it keeps
// at most 4096 bytes.
constexpr const char* kKubernetesTerminationLog = "/dev/termination-log";

// `progress` is /progress's object at the end (train_metrics.h), so the
// operator reads the final loss and checkpoint from the pod's status after
// the process is gone.
void WriteTerminationMessage(const std::string& path, ExitCode code, const Status& s,
                             int64_t last_step, const nlohmann::json& progress) {
  std::string message = s.ok() ? "training finished" : s.ToString();
  if (message.size() > 2500) message = message.substr(0, 2500) + "...";
  nlohmann::json j = {{"exitCode", ToInt(code)},
                      {"reason", ExitCodeName(code)},
                      {"message", message},
                      {"lastStep", last_step}};
  // At most a few hundred bytes (numbers and one checkpoint URI of at most
  // 1 KiB), so the whole message stays within Kubernetes' 4096.
  if (progress.is_object() && !progress.empty() && progress.dump().size() <= 1400) {
    j["progress"] = progress;
  }
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
  std::string fence;  // --fence UID:ATTEMPT
  o.model.num_layers = 4;
  o.model.num_heads = 4;
  o.model.channels = 128;
  o.model.max_seq_len = 0;  // Defaults to --seq.
  double peak_tflops = 0;
  constexpr int kIntMax = std::numeric_limits<int>::max();
  constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const auto kMillisecond = std::chrono::milliseconds(1);
  FlagSet flags("kiln-worker train", kSynopsis, kEpilogue);
  flags.Section("Device:");
  flags.Enum("device", &device, {"cpu", "cuda", "auto"},
             "Where to train. cuda: bf16 mixed precision on one GPU per rank, gradients "
             "summed with NCCL (checkpoints are the same format on both). auto: cuda when "
             "a GPU is visible, else the CPU, saying so (a warning line on stdout and "
             "the device in the done line).");
  flags.Int("cuda-device", &cuda_device, 0, 1 << 16, "The GPU of this rank.")
      .DefaultText("LOCAL_RANK, else 0");
  flags.Section("Model:");
  flags.Int("layers", &o.model.num_layers, 1, 1024, "Transformer blocks.");
  flags.Int("heads", &o.model.num_heads, 1, 1024, "Attention heads.");
  flags.Int("channels", &o.model.channels, 1, 1 << 16, "Embedding width.");
  flags.Section("Data and batch:");
  flags
      .String("data", &o.manifest,
              "The manifest.json of 'kiln-worker prepare', a path or s3://bucket/key "
              "(shards are read from S3 one at a time; see docs/storage.md). Required.")
      .Metavar("PATH");
  flags.Int("batch", &o.batch_size, 1, kIntMax, "Sequences per micro-batch.");
  flags.Int("seq", &o.seq_len, 1, kIntMax, "Tokens per sequence (also the context length).");
  flags.Int("grad-accum", &o.grad_accumulation, 1, kIntMax, "Micro-batches per optimizer step.");
  flags.Section("Optimisation:");
  flags.Int("steps", &o.steps, int64_t{1}, kInt64Max, "Optimizer steps.");
  flags.Double("lr", &o.learning_rate, 0, kInf, "Peak learning rate.");
  flags.Int("warmup", &o.warmup_steps, int64_t{0}, kInt64Max, "Linear warm-up steps.");
  flags.Double("min-lr-ratio", &o.min_lr_ratio, 0, 1,
               "The cosine schedule's final learning rate over the peak.");
  flags.Double("weight-decay", &o.weight_decay, 0, kInf, "AdamW weight decay.");
  flags.Double("grad-clip", &o.grad_clip, 0, kInf, "Max global gradient norm; 0 disables.");
  flags.Int("seed", &o.seed, uint64_t{0}, std::numeric_limits<uint64_t>::max(),
            "Initialisation and shuffling seed.");
  flags.Double("loss-spike-factor", &o.loss_spike_factor, 0, kInf,
               "Stop with a numerics fault when the loss exceeds X times its recent average; "
               "0: off.");
  flags.Section("Checkpoints:");
  flags
      .String("checkpoint-dir", &o.checkpoint_dir,
              "Save here and resume from the newest intact checkpoint: a directory, "
              "file:///path or s3://bucket/prefix (S3 settings from the AWS_* environment, "
              "docs/storage.md).")
      .Metavar("DIR|URI");
  flags.Int("checkpoint-every", &o.checkpoint_every, int64_t{1}, kInt64Max,
            "Steps between checkpoints.");
  flags.Int("checkpoint-keep", &o.checkpoint_keep, 1, kIntMax, "Checkpoints kept.");
  flags
      .Int("rewind-before-step", &o.rewind_before_step, int64_t{0}, kInt64Max,
           "After a divergence: delete the checkpoints of step N and later, then resume from "
           "the newest one before N (the operator sets it after a LossDiverged exit); 0: off.")
      .Metavar("N");
  flags
      .Int("skip-data-through-step", &o.skip_data_through_step, int64_t{0}, kInt64Max,
           "Skip the data of the steps after the resumed one through step N, so the batches a "
           "run diverged on are not replayed; saved at once as the resumed step's checkpoint.")
      .Metavar("N");
  flags
      .String("fence", &fence,
              "This gang's token, the TrainingJob's UID and attempt: rank 0 claims the "
              "checkpoint location with it and stops (exit 8) once a newer attempt holds it "
              "(docs/trainingjob.md, Fencing). The operator sets it.")
      .Metavar("UID:ATTEMPT")
      .DefaultText("off")
      .Check([](const std::string& text) { return train::ParseFenceToken(text).status(); });
  flags.Duration("fence-check-interval", &o.fence_check_interval, kMillisecond,
                 "How often rank 0 reads the fence between checkpoints.");
  flags
      .String("termination-message-path", &termination_path,
              "Where to write the outcome as JSON on exit.")
      .Metavar("PATH")
      .DefaultText("/dev/termination-log when it exists, as in a pod");
  flags.Section("Reporting:");
  flags.Int("log-every", &o.log_every, int64_t{1}, kInt64Max, "Steps between progress lines.");
  flags.Int("val-every", &o.val_every, int64_t{0}, kInt64Max,
            "Steps between validation runs; 0: at the end.");
  flags.Int("val-batches", &o.val_batches, 1, kIntMax, "Batches per validation run.");
  flags
      .String("metrics-bind-address", &metrics_address,
              "Serve Prometheus /metrics, JSON /progress and /healthz here, e.g. :9400.")
      .Metavar("ADDR")
      .DefaultText("off")
      .Check([](const std::string& text) { return ParseBindAddress(text).status(); });
  flags
      .Double("peak-tflops", &peak_tflops, 0, kInf,
              "This process's peak TFLOP/s for the MFU figure.")
      .DefaultText(
          "estimated from the CPU's cores, clock and vector width, or the GPU's dense bf16 "
          "rate at its maximum clock");
  flags.Section("Data parallel:");
  flags.Duration("comm-timeout", &tcp.timeout, kMillisecond,
                 "A collective fails when no data moves for this long; it must exceed the "
                 "longest pause between steps (rank 0 writing a checkpoint).");
  flags.Duration("rendezvous-timeout", &tcp.rendezvous_timeout, kMillisecond,
                 "How long to wait for every rank to join.");
  if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
  if (flags.IsSet("peak-tflops")) o.peak_flops = peak_tflops * 1e12;
  if (!fence.empty()) o.fence = *train::ParseFenceToken(fence);
  if (o.manifest.empty()) {
    return flags.UsageError("--data is required (a manifest.json from prepare)");
  }
  if (o.model.max_seq_len == 0) o.model.max_seq_len = o.seq_len;
  int64_t last_step = 0;                       // The last step whose update was applied.
  std::optional<train::TrainMetrics> metrics;  // Once training starts.
  auto finish = [&](const Status& s) {
    const ExitCode code = TrainExitCode(s);
    if (!s.ok()) std::fprintf(stderr, "kiln-worker train: %s\n", s.ToString().c_str());
    if (!termination_path.empty()) {
      WriteTerminationMessage(termination_path, code, s, last_step,
                              metrics ? metrics->Progress() : nlohmann::json());
    }
    return ToInt(code);
  };
  auto chosen = ResolveDevice(device, cuda_device);
  if (!chosen.ok()) {
    if (chosen.status().code() == StatusCode::kInvalidArgument) {
      return flags.UsageError(chosen.status().message());
    }
    return finish(chosen.status());
  }
  if (!chosen->fallback.empty()) {
    const nlohmann::json warning = {
        {"event", "warning"},
        {"message", "--device auto: " + chosen->fallback + "; training on the CPU"}};
    std::printf("%s\n", warning.dump().c_str());
    std::fflush(stdout);
  }
  // Ranks compare the device they run on, not the flag they were given.
  device = chosen->cuda ? "cuda" : "cpu";
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
  train::TrainMetrics& live = metrics.emplace(o.steps, env->rank);
  std::unique_ptr<HttpServer> server;
  if (!metrics_address.empty()) {
    auto started = HttpServer::Start(
        {.bind_address = metrics_address},
        {HttpRoute::Get("/metrics",
                        [&live](const HttpRequest&) {
                          return HttpReply{
                              .status = 200,
                              .content_type = "text/plain; version=0.0.4; charset=utf-8",
                              .body = live.Scrape()};
                        }),
         HttpRoute::Get("/progress",
                        [&live](const HttpRequest&) {
                          return HttpReply{.status = 200,
                                           .content_type = "application/json",
                                           .body = live.Progress().dump()};
                        }),
         HttpRoute::Get("/healthz", [](const HttpRequest&) { return HttpReply{.body = "ok"}; })});
    if (!started.ok()) return finish(started.status());
    server = std::move(*started);
  }
  Status s = (*trainer)->Run(
      [&](const nlohmann::json& line) {
        live.Observe(line);
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
      },
      &stop.requested());
  if (server) server->Drain(std::chrono::seconds(1));  // A scrape in flight may finish.
  last_step = (*trainer)->completed_step();
  return finish(s);
}

}  // namespace kiln::worker
