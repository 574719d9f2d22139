#include "worker/cmd/serve_command.h"

#include <cstdio>
#include <filesystem>
#include <thread>

#include <cpprest/filestream.h>
#include <cpprest/http_client.h>
#include <nlohmann/json.hpp>

#include "base/flags.h"
#include "base/stop_signal.h"
#include "worker/cmd/device_flags.h"
#include "worker/exit_codes.h"
#if KILN_WORKER_CUDA
#include "worker/serve/cuda_decoder.h"
#endif
#include "worker/serve/engine.h"
#include "worker/serve/server.h"
#include "worker/storage/s3_client.h"
#include "worker/train/fetch_model.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSynopsis =
    "Usage: kiln-worker serve --checkpoint PATH|URL [options]\n"
    "\n"
    "Serves a kiln checkpoint over an OpenAI-compatible HTTP API:\n"
    "POST /v1/completions (streaming with \"stream\": true), GET /v1/models,\n"
    "/healthz, /readyz (200 once loaded and warmed up) and /metrics.\n";

constexpr const char* kEpilogue =
    "The HTTP limits and timeouts are in docs/serving.md.\n"
    "\n"
    "Exit codes: 0 drained cleanly, 2 bad flags, 3 cannot listen or no such GPU,\n"
    "6 checkpoint missing, unreadable or damaged.\n";

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker serve: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

// Downloads `url` to `dir` (through a temporary file) and returns the path.
StatusOr<std::string> Download(const std::string& url, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  // Where output goes is the infrastructure's: Unavailable (exit 3) whatever
  // the errno, not ErrnoStatus's code (base/errno_status.h).
  if (ec) return Status::Unavailable("cannot create " + dir + ": " + ec.message());
  std::string name = url.substr(url.find_last_of('/') + 1);
  if (name.empty()) name = "checkpoint.ckpt";
  const std::string path = (fs::path(dir) / name).string(), tmp = path + ".download";
  try {
    auto out = concurrency::streams::fstream::open_ostream(tmp).get();
    web::http::client::http_client client(url);
    auto response = client.request(web::http::methods::GET).get();
    if (response.status_code() != web::http::status_codes::OK) {
      out.close().get();
      fs::remove(tmp, ec);  // Best effort: a leftover .download is overwritten next time.
      return Status::NotFound("GET " + url + ": HTTP " + std::to_string(response.status_code()));
    }
    response.body().read_to_end(out.streambuf()).get();
    out.close().get();
  } catch (const std::exception& e) {
    fs::remove(tmp, ec);  // Best effort, as above.
    return Status::Unavailable("GET " + url + ": " + e.what());
  }
  fs::rename(tmp, path, ec);
  if (ec) return Status::Unavailable("cannot rename " + tmp + ": " + ec.message());
  return path;
}

}  // namespace

int RunServeCommand(int argc, char** argv) {
  StopSignal& stop = StopSignal::Install();  // Before any thread starts.
  std::string checkpoint, sha256, cache_dir = "/tmp/kiln-models";
  serve::ServerOptions server_options;
  serve::EngineOptions engine_options;
  std::chrono::milliseconds drain(std::chrono::seconds(30));
  std::string device = "cpu";
  int cuda_device = -1;
  std::string cpu_weights = "float";
  FlagSet flags("kiln-worker serve", kSynopsis, kEpilogue);
  flags.Section("Model:");
  flags
      .String("checkpoint", &checkpoint,
              "A checkpoint file, a checkpoint directory (its newest intact checkpoint), an "
              "llm.c model file, an http(s):// URL of a file, or an s3://bucket/key of one (or "
              "s3://bucket/prefix/ of object checkpoints: the newest intact one), downloaded into "
              "--cache-dir. "
              "Every tensor's SHA-256 is verified (llm.c files: the size against the header). "
              "Required.")
      .Metavar("PATH|URL");
  flags.String("checkpoint-sha256", &sha256, "Also require this SHA-256 of the whole file.")
      .Metavar("HEX");
  flags.String("cache-dir", &cache_dir, "Where URLs and s3:// models are downloaded.")
      .Metavar("DIR");
  flags.String("model-name", &server_options.model_name, "The name clients send as \"model\".")
      .Metavar("NAME");
  server_options.model_version.clear();
  flags
      .String("model-version", &server_options.model_version,
              "Sent in every response's X-Kiln-Model-Version header.")
      .Metavar("V")
      .DefaultText("the checkpoint's file name");
  flags.Section("Device:");
  flags.Enum("device", &device, {"cpu", "cuda"},
             "Where to decode. cuda: bf16 weights and KV cache on one GPU.");
  flags.Int("cuda-device", &cuda_device, 0, 1 << 16, "The GPU.").DefaultText("LOCAL_RANK, else 0");
  flags.Enum("cpu-weights", &cpu_weights, {"float", "bf16"},
             "On the CPU, the weight matrices as float (exact) or bf16 (half the memory "
             "traffic; logits within about 1% of float's).");
  flags.Section("Server:");
  flags.String("bind", &server_options.bind_address, "Listen address.").Metavar("ADDR");
  flags.Duration("drain-timeout", &drain, std::chrono::milliseconds(0),
                 "On SIGTERM, how long in-flight requests may finish; the process exits "
                 "within D + 2s.");
  flags.Section("Engine:");
  flags.Int("max-running", &engine_options.max_running, 1, 4096, "Requests decoded together.");
  flags.Int("max-batch-tokens", &engine_options.max_batch_tokens, 1, 1 << 20,
            "Tokens per engine step.");
  flags.Int("prefill-chunk", &engine_options.prefill_chunk, 1, 1 << 20,
            "Prompt tokens a request prefills per step.");
  flags.Int("max-queue", &engine_options.max_queue, 1, 1 << 20, "Waiting requests; more get 429.");
  flags.Int("block-size", &engine_options.block_size, 1, 4096, "Tokens per KV-cache block.");
  flags.Int("kv-blocks", &engine_options.kv_blocks, 0, 1 << 24,
            "KV-cache blocks; 0: enough for max-running full contexts.");
  flags.Bool("prefix-cache", &engine_options.prefix_cache,
             "Keep finished prompts' full KV-cache blocks for later requests that start with the "
             "same tokens (evicted, least recently used first, when the cache runs short); on by "
             "default, --prefix-cache=false turns it off.");
  if (auto exit = flags.ParseOrExit(argc, argv, 2)) return *exit;
  if (checkpoint.empty()) return flags.UsageError("--checkpoint is required");
  engine_options.cpu_weights =
      cpu_weights == "bf16" ? serve::CpuWeights::kBf16 : serve::CpuWeights::kFloat;
  auto chosen = ResolveDevice(device, cuda_device);
  if (!chosen.ok()) {
    if (chosen.status().code() == StatusCode::kInvalidArgument) {
      return flags.UsageError(chosen.status().message());
    }
    return Fail(chosen.status());
  }

  auto warn = [](const std::string& message) {
    std::fprintf(stderr, "kiln-worker serve: %s\n", message.c_str());
  };
  if (checkpoint.rfind("http://", 0) == 0 || checkpoint.rfind("https://", 0) == 0) {
    auto path = Download(checkpoint, cache_dir);
    if (!path.ok()) return Fail(path.status());
    checkpoint = *path;
  } else if (storage::IsS3Uri(checkpoint)) {
    auto path = train::FetchS3Model(checkpoint, cache_dir, warn);
    if (!path.ok()) return Fail(path.status());
    checkpoint = *path;
  }
  // The newest intact checkpoint; a damaged one is reported and skipped.
  auto loaded_model = train::LoadModel(checkpoint, sha256, warn);
  if (!loaded_model.ok()) return Fail(loaded_model.status());
  model::Gpt<float>& model = loaded_model->model;
  const std::string& loaded = loaded_model->path;
  if (server_options.model_version.empty()) {
    server_options.model_version = fs::path(loaded).filename().string();
  }

  serve::DecoderFactory make_decoder;  // Null: the CPU decoder.
#if KILN_WORKER_CUDA
  if (chosen->cuda) {
    make_decoder = [&](const model::Gpt<float>& m, int block_size, int num_blocks) {
      return serve::NewCudaDecoder(m, block_size, num_blocks, chosen->cuda_device);
    };
  }
#endif
  auto engine = serve::Engine::Create(model, engine_options, make_decoder);
  if (!engine.ok()) return Fail(engine.status());
  auto server = serve::InferenceServer::Start(**engine, server_options);
  if (!server.ok()) return Fail(server.status());
  // Warm-up on the serving thread (see WarmUp) before /readyz says yes.
  if (Status warm = (*server)->WarmUp(); !warm.ok()) return Fail(warm);
  (*server)->SetReady(true);
  std::printf("%s\n", nlohmann::json{{"event", "serving"},
                                     {"url", (*server)->url()},
                                     {"model", server_options.model_name},
                                     {"version", server_options.model_version},
                                     {"checkpoint", loaded},
                                     {"device", (*engine)->device()},
                                     {"parameters", model.num_parameters()}}
                          .dump()
                          .c_str());
  std::fflush(stdout);
  while (!stop.WaitFor(std::chrono::seconds(1))) {
  }
  const int cancelled = (*server)->Drain(drain);
  std::printf("%s\n",
              nlohmann::json{{"event", "drained"}, {"cancelled", cancelled}}.dump().c_str());
  return 0;
}

}  // namespace kiln::worker
