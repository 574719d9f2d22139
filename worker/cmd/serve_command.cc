#include "worker/cmd/serve_command.h"

#include <cstdio>
#include <filesystem>
#include <thread>

#include <cpprest/filestream.h>
#include <cpprest/http_client.h>
#include <nlohmann/json.hpp>

#include "base/stop_signal.h"
#include "worker/cmd/device_flags.h"
#include "worker/cmd/flags.h"
#include "worker/exit_codes.h"
#if KILN_WORKER_CUDA
#include "worker/serve/cuda_decoder.h"
#endif
#include "worker/serve/engine.h"
#include "worker/serve/server.h"
#include "worker/train/load_model.h"

namespace kiln::worker {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    "Usage: kiln-worker serve --checkpoint PATH|URL [options]\n"
    "\n"
    "Serves a kiln checkpoint over an OpenAI-compatible HTTP API:\n"
    "POST /v1/completions (streaming with \"stream\": true), GET /v1/models,\n"
    "/healthz, /readyz (200 once loaded and warmed up) and /metrics.\n"
    "\n"
    "Model:\n"
    "  --checkpoint PATH|URL   A checkpoint file, a checkpoint directory (its newest\n"
    "                          intact checkpoint), an llm.c model file, or an\n"
    "                          http(s):// URL of a file, downloaded into --cache-dir.\n"
    "                          Every tensor's SHA-256 is verified (llm.c files: the\n"
    "                          size against the header).\n"
    "  --checkpoint-sha256 HEX Also require this SHA-256 of the whole file.\n"
    "  --cache-dir DIR         Where URLs are downloaded (default /tmp/kiln-models).\n"
    "  --model-name NAME       The name clients send as \"model\" (default kiln).\n"
    "  --model-version V       Sent in every response's X-Kiln-Model-Version header\n"
    "                          (default: the checkpoint's file name).\n"
    "Device:\n"
    "  --device cpu|cuda (cpu) Where to decode. cuda: bf16 weights and KV cache on\n"
    "                          one GPU.\n"
    "  --cuda-device N         The GPU (default: LOCAL_RANK, else 0).\n"
    "  --cpu-weights float|bf16 (float)  On the CPU, the weight matrices as float\n"
    "                          (exact) or bf16 (half the memory traffic; logits\n"
    "                          within about 1% of float's).\n"
    "Server:\n"
    "  --bind ADDR             Listen address (default :8000).\n"
    "  --drain-timeout D       On SIGTERM, how long in-flight requests may finish\n"
    "                          (default 30s); the process exits within D + 2s.\n"
    "                          The HTTP limits and timeouts are in docs/serving.md.\n"
    "Engine:\n"
    "  --max-running N (16)  --max-batch-tokens N (256)  --prefill-chunk N (64)\n"
    "  --max-queue N (64; more waiting requests get 429)\n"
    "  --block-size N (16)  --kv-blocks N (0: enough for max-running full contexts)\n"
    "\n"
    "Exit codes: 0 drained cleanly, 2 bad flags, 3 cannot listen or no such GPU,\n"
    "6 checkpoint missing, unreadable or damaged.\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "kiln-worker serve: %s\n\nRun 'kiln-worker serve --help' for usage.\n",
               why.c_str());
  return ToInt(ExitCode::kConfigurationError);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "kiln-worker serve: %s\n", s.ToString().c_str());
  return ToInt(ExitCodeFor(s));
}

// Downloads `url` to `dir` (through a temporary file) and returns the path.
StatusOr<std::string> Download(const std::string& url, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
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
      fs::remove(tmp, ec);
      return Status::NotFound("GET " + url + ": HTTP " + std::to_string(response.status_code()));
    }
    response.body().read_to_end(out.streambuf()).get();
    out.close().get();
  } catch (const std::exception& e) {
    fs::remove(tmp, ec);
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
  FlagSet flags;
  flags.String("device", &device);
  std::string cpu_weights = "float";
  flags.String("cpu-weights", &cpu_weights);
  flags.Int("cuda-device", &cuda_device, 0, 1 << 16);
  flags.String("checkpoint", &checkpoint);
  flags.String("checkpoint-sha256", &sha256);
  flags.String("cache-dir", &cache_dir);
  flags.String("model-name", &server_options.model_name);
  flags.String("model-version", &server_options.model_version);
  flags.String("bind", &server_options.bind_address);
  flags.Duration("drain-timeout", &drain);
  flags.Int("max-running", &engine_options.max_running, 1, 4096);
  flags.Int("max-batch-tokens", &engine_options.max_batch_tokens, 1, 1 << 20);
  flags.Int("prefill-chunk", &engine_options.prefill_chunk, 1, 1 << 20);
  flags.Int("max-queue", &engine_options.max_queue, 1, 1 << 20);
  flags.Int("block-size", &engine_options.block_size, 1, 4096);
  flags.Int("kv-blocks", &engine_options.kv_blocks, 0, 1 << 24);
  server_options.model_version.clear();
  if (std::string error = flags.Parse(argc, argv, 2); !error.empty()) {
    if (error == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return Usage(error);
  }
  if (checkpoint.empty()) return Usage("--checkpoint is required");
  if (cpu_weights != "float" && cpu_weights != "bf16") {
    return Usage("--cpu-weights: 'float' or 'bf16', not '" + cpu_weights + "'");
  }
  engine_options.cpu_weights =
      cpu_weights == "bf16" ? serve::CpuWeights::kBf16 : serve::CpuWeights::kFloat;
  auto chosen = ResolveDevice(device, cuda_device);
  if (!chosen.ok()) {
    if (chosen.status().code() == StatusCode::kInvalidArgument) {
      return Usage(chosen.status().message());
    }
    return Fail(chosen.status());
  }

  if (checkpoint.rfind("http://", 0) == 0 || checkpoint.rfind("https://", 0) == 0) {
    auto path = Download(checkpoint, cache_dir);
    if (!path.ok()) return Fail(path.status());
    checkpoint = *path;
  }
  // The newest intact checkpoint; a damaged one is reported and skipped.
  auto loaded_model = train::LoadModel(checkpoint, sha256, [](const std::string& message) {
    std::fprintf(stderr, "kiln-worker serve: %s\n", message.c_str());
  });
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
  // Warm-up: one short request through every path (prefill, decode,
  // sampling) before /readyz says yes.
  auto warm = (*engine)->Submit({.prompt = {'\n'}, .max_tokens = 2}, nullptr);
  if (!warm.ok()) return Fail(warm.status());
  while (true) {
    auto worked = (*engine)->Step();
    if (!worked.ok()) return Fail(worked.status());
    if (!*worked) break;
  }
  auto server = serve::InferenceServer::Start(**engine, server_options);
  if (!server.ok()) return Fail(server.status());
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
