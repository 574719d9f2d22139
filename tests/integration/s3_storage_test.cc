// kiln-worker's S3 storage against a real S3-compatible server: SeaweedFS's
// S3 gateway on 127.0.0.1, verifying SigV4 against a test identity (started
// by the CTest fixture kiln_seaweedfs: scripts/seaweedfs.py). Round trips of
// every object kind, TLS to a store behind a private CA, errors with the
// worker's exit codes, checkpoints that survive an upload killed halfway and
// a flipped byte, and a training run on s3:// that resumes exactly like one
// on files.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <catch2/catch.hpp>

#include "base/file.h"
#include "base/http_server.h"
#include "base/subprocess.h"
#include "kube/http.h"
#include "tests/support/http_probe.h"
#include "tests/support/random_gpt.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_training.h"
#include "worker/exit_codes.h"
#include "worker/storage/s3_client.h"
#include "worker/storage/s3_object_store.h"
#include "worker/storage/s3_options.h"
#include "worker/train/object_checkpoint_store.h"
#include "worker/train/trainer.h"

namespace kiln {
namespace {

using storage::S3Client;
using storage::S3ObjectStore;
using storage::S3Options;

constexpr const char* kBucket = "kiln-test";

// The fixture's AWS_* variables, also set in this process (for s3:// paths
// opened through the environment).
std::map<std::string, std::string> ServerEnv() {
  const char* dir = std::getenv("KILN_S3_TEST_DIR");
  REQUIRE(dir != nullptr);  // Set by CTest: run through ctest, which starts SeaweedFS.
  auto text = ReadFile(std::string(dir) + "/env");
  INFO("no " << dir << "/env: the kiln_seaweedfs fixture did not start SeaweedFS");
  REQUIRE(text.ok());
  std::map<std::string, std::string> env;
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    env[line.substr(0, eq)] = line.substr(eq + 1);
    setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 1);
  }
  return env;
}

S3Options Options(std::map<std::string, std::string> env) {
  auto o = storage::S3OptionsFromEnvironment([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
  INFO(o.status().ToString());
  REQUIRE(o.ok());
  o->part_size = 5 << 20;  // S3's smallest part: several parts in a small test.
  o->initial_backoff = std::chrono::milliseconds(20);
  return *o;
}

std::shared_ptr<S3Client> Client(const S3Options& o) {
  auto c = S3Client::Create(o);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return std::shared_ptr<S3Client>(std::move(*c));
}

std::shared_ptr<S3Client> BucketClient() {
  auto client = Client(Options(ServerEnv()));
  Status made = client->CreateBucket(kBucket);
  INFO(made.ToString());
  REQUIRE(made.ok());
  return client;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

TEST_CASE("objects round-trip through SeaweedFS", "[s3]") {
  auto client = BucketClient();
  S3ObjectStore store(client, kBucket);
  const std::string small = RandomBytes(1000, 1);  // Every byte value, binary-safe.
  REQUIRE(store.Put("rt/small.bin", small).ok());
  CHECK(store.Get("rt/small.bin").value() == small);
  CHECK(store.GetRange("rt/small.bin", 10, 20).value() == small.substr(10, 20));
  CHECK(store.Stat("rt/small.bin").value().size == 1000);

  // Bigger than a part: a multipart upload of three parts, read back with
  // parallel ranged GETs.
  const std::string big = RandomBytes((12 << 20) + 123, 2);
  auto writer = store.NewWriter("rt/big.bin");
  REQUIRE(writer.ok());
  for (size_t i = 0; i < big.size(); i += 1 << 20) {
    REQUIRE((*writer)->Append(std::string_view(big).substr(i, 1 << 20)).ok());
  }
  CHECK(store.Stat("rt/big.bin").status().code() == StatusCode::kNotFound);  // Not yet visible.
  REQUIRE((*writer)->Commit().ok());
  auto back = store.Get("rt/big.bin");
  REQUIRE(back.ok());
  CHECK(back->size() == big.size());
  CHECK(*back == big);

  auto listed = store.List("rt/");
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].key == "rt/big.bin");
  CHECK((*listed)[1].key == "rt/small.bin");
  REQUIRE(store.Delete("rt/small.bin").ok());
  REQUIRE(store.Delete("rt/small.bin").ok());  // Deleting nothing is fine.
  CHECK(store.Get("rt/small.bin").status().code() == StatusCode::kNotFound);
  REQUIRE(store.Delete("rt/big.bin").ok());
}

TEST_CASE("a store behind a private CA: trusted through ca.crt in the Secret, refused without",
          "[s3][tls]") {
  BucketClient();
  auto server = ServerEnv();
  INFO("the fixture's HTTPS port: " << server["KILN_S3_TLS_ENDPOINT"]);
  REQUIRE(server["KILN_S3_TLS_ENDPOINT"].rfind("https://127.0.0.1:", 0) == 0);
  auto ca = ReadFile(server["KILN_S3_TLS_CA"]);
  REQUIRE(ca.ok());
  // The Secret as the operator mounts it: one file per key.
  testing::TempDir secret;
  secret.Write("AWS_ACCESS_KEY_ID", server["AWS_ACCESS_KEY_ID"]);
  secret.Write("AWS_SECRET_ACCESS_KEY", server["AWS_SECRET_ACCESS_KEY"] + "\n");
  const std::map<std::string, std::string> env = {
      {"AWS_ENDPOINT_URL_S3", server["KILN_S3_TLS_ENDPOINT"]},
      {"AWS_REGION", "us-east-1"},
      {"KILN_S3_CREDENTIALS_DIR", secret.path()}};

  // Without the CA the system roots do not know the store: a clear error.
  S3ObjectStore untrusted(Client(Options(env)), kBucket);
  const auto asked = std::chrono::steady_clock::now();
  auto refused = untrusted.Get("tls/none");
  std::printf("s3 tls: without the CA, after %.2f s: %s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count(),
              refused.status().ToString().c_str());
  INFO(refused.status().ToString());
  CHECK_FALSE(refused.ok());
  CHECK(refused.status().code() != StatusCode::kNotFound);
  CHECK_THAT(refused.status().message(), Catch::Contains("TLS handshake"));
  CHECK_THAT(refused.status().message(), Catch::Contains("ca.crt"));
  CHECK_THAT(refused.status().message(), !Catch::Contains("kubeconfig"));

  secret.Write(storage::kS3CaFile, *ca);
  S3ObjectStore store(Client(Options(env)), kBucket);
  const std::string bytes = RandomBytes(3000, 7);
  REQUIRE(store.Put("tls/object.bin", bytes).ok());
  CHECK(store.Get("tls/object.bin").value() == bytes);
  REQUIRE(store.Delete("tls/object.bin").ok());

  // A different CA (here: the store's own certificate as a CA) is refused.
  auto leaf = ReadFile(
      (std::filesystem::path(server["KILN_S3_TLS_CA"]).parent_path() / "tls.crt").string());
  REQUIRE(leaf.ok());
  secret.Write(storage::kS3CaFile, *leaf);
  S3ObjectStore wrong_ca(Client(Options(env)), kBucket);
  CHECK_FALSE(wrong_ca.Get("tls/none").ok());
}

TEST_CASE("wrong credentials and a missing bucket are clear terminal errors", "[s3]") {
  BucketClient();
  auto env = ServerEnv();
  env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret";
  auto wrong = Client(Options(env));
  auto got = wrong->Get(kBucket, "anything");
  CHECK(got.status().code() == StatusCode::kPermissionDenied);
  CHECK(got.status().message().find("SignatureDoesNotMatch") != std::string::npos);
  CHECK(worker::ExitCodeFor(got.status()) == worker::ExitCode::kDataError);

  auto right = Client(Options(ServerEnv()));
  auto missing = right->Get("no-such-bucket-kiln", "k");
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("NoSuchBucket") != std::string::npos);
  CHECK(worker::ExitCodeFor(missing.status()) == worker::ExitCode::kDataError);
}

// A loopback proxy in front of SeaweedFS that answers the first `throttled`
// requests with 503 SlowDown, as S3 does under load, and forwards the rest.
class ThrottlingProxy {
 public:
  ThrottlingProxy(const std::string& upstream, int throttled) : throttled_(throttled) {
    kube::RestConfig config;
    config.server = upstream;
    upstream_ = kube::NewHttpTransport(config).value();
    std::vector<HttpRoute> routes;
    for (const char* method : {"GET", "PUT", "POST", "DELETE"}) {
      routes.push_back(HttpRoute::Async(
          method, "/",
          [this](const HttpRequest& r, std::shared_ptr<HttpResponder> responder) {
            responder->Reply(Answer(r));
          },
          HttpMatch::kPrefix));
    }
    server_ = HttpServer::Start(
                  {.bind_address = "127.0.0.1:" + std::to_string(kiln::testing::FreePort())},
                  std::move(routes))
                  .value();
  }
  const std::string& url() const { return server_->url(); }
  int seen() const { return seen_; }

 private:
  HttpReply Answer(const HttpRequest& r) {
    if (seen_++ < throttled_) {
      return {.status = 503,
              .content_type = "application/xml",
              .body =
                  "<Error><Code>SlowDown</Code><Message>Please reduce your request "
                  "rate.</Message></Error>"};
    }
    kube::HttpRequest out{.method = r.method, .headers = r.headers, .body = r.body};
    out.path = storage::UriEncode(r.path, true);
    std::string query;
    for (const auto& [k, v] : r.query) {
      query += (query.empty() ? "?" : "&") + storage::UriEncode(k, false) + "=" +
               storage::UriEncode(v, false);
    }
    out.path += query;
    auto resp = upstream_->Do(out);
    if (!resp.ok()) return {.status = 502, .body = resp.status().ToString()};
    HttpReply reply{
        .status = resp->status, .content_type = resp->headers["content-type"], .body = resp->body};
    if (resp->headers.count("etag")) reply.headers.push_back({"ETag", resp->headers["etag"]});
    return reply;
  }

  std::atomic<int> seen_{0};
  const int throttled_;
  std::unique_ptr<kube::HttpTransport> upstream_;
  std::unique_ptr<HttpServer> server_;
};

TEST_CASE("throttling (503 SlowDown) is retried, and reported when it persists", "[s3]") {
  BucketClient();
  auto env = ServerEnv();
  SECTION("two throttled answers, then through") {
    ThrottlingProxy proxy(env["AWS_ENDPOINT_URL"], 2);
    env["AWS_ENDPOINT_URL"] = proxy.url();
    auto client = Client(Options(env));
    Status put = client->Put(kBucket, "throttle/a", "payload");
    INFO(put.ToString());
    REQUIRE(put.ok());
    CHECK(proxy.seen() == 3);
    CHECK(client->Get(kBucket, "throttle/a").value() == "payload");
  }
  SECTION("throttled throughout: Unavailable, an infrastructure fault (exit 3)") {
    ThrottlingProxy proxy(env["AWS_ENDPOINT_URL"], 1000);
    env["AWS_ENDPOINT_URL"] = proxy.url();
    auto got = Client(Options(env))->Get(kBucket, "throttle/a");
    CHECK(got.status().code() == StatusCode::kUnavailable);
    CHECK(got.status().message().find("SlowDown") != std::string::npos);
    CHECK(proxy.seen() == 5);
    CHECK(worker::ExitCodeFor(got.status()) == worker::ExitCode::kInfrastructureFault);
  }
}

TEST_CASE("an S3 checkpoint killed mid-upload or damaged is skipped for the previous one",
          "[s3][checkpoint]") {
  auto client = BucketClient();
  auto store = std::make_shared<S3ObjectStore>(client, kBucket);
  train::ObjectCheckpointStore checkpoints(store, "ckpt-kill");
  // Big enough for a multipart upload of several parts (AdamW moments too).
  auto m = kiln::testing::RandomGpt(2, 4, 128, 64, 1, 0.1f);
  REQUIRE(checkpoints.Write(m, {.step = 5, .position = {}, .seed = 1}, 3).ok());
  std::vector<std::string> warnings;
  auto warn = [&](const std::string& w) { warnings.push_back(w); };

  SECTION("killed halfway through the data upload") {
    // What a killed writer leaves: parts uploaded, the upload neither
    // completed nor aborted, no manifest.
    auto writer = store->NewWriter("ckpt-kill/step-00000010.ckpt");
    REQUIRE(writer.ok());
    REQUIRE((*writer)->Append(RandomBytes(11 << 20, 3)).ok());
    (void)writer->release();  // Deliberately leaked: a dead process runs no destructor.
    auto listed = store->List("ckpt-kill/");
    REQUIRE(listed.ok());
    CHECK(listed->size() == 2);  // Step 5's data and manifest only.
    auto into = kiln::testing::RandomGpt(2, 4, 128, 64, 2, 0.1f);
    auto r = checkpoints.RestoreLatest(into, warn);
    REQUIRE(r.ok());
    CHECK((*r)->step == 5);
    CHECK(std::equal(m.params().begin(), m.params().end(), into.params().begin()));
  }
  SECTION("a flipped byte in the newest") {
    REQUIRE(checkpoints.Write(m, {.step = 10, .position = {}, .seed = 1}, 3).ok());
    std::string data = store->Get("ckpt-kill/step-00000010.ckpt").value();
    data[data.size() / 2] ^= 0x10;
    REQUIRE(store->Put("ckpt-kill/step-00000010.ckpt", data).ok());
    auto into = kiln::testing::RandomGpt(2, 4, 128, 64, 2, 0.1f);
    auto r = checkpoints.RestoreLatest(into, warn);
    REQUIRE(r.ok());
    CHECK((*r)->step == 5);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("checksum mismatch") != std::string::npos);
    CHECK(warnings[0].find("s3://kiln-test/ckpt-kill/step-00000010.ckpt") != std::string::npos);
  }
}

// The prepared data directory copied to s3://kiln-test/<prefix>/.
std::string UploadData(S3ObjectStore& store, const std::string& manifest_path,
                       const std::string& prefix) {
  const auto dir = std::filesystem::path(manifest_path).parent_path();
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    REQUIRE(store
                .Put(prefix + "/" + entry.path().filename().string(),
                     ReadFile(entry.path().string()).value())
                .ok());
  }
  return "s3://" + std::string(kBucket) + "/" + prefix + "/manifest.json";
}

std::map<int64_t, double> Train(const train::TrainOptions& o, int64_t stop_after = 0,
                                std::vector<nlohmann::json>* events = nullptr) {
  auto trainer = train::Trainer::Create(o);
  INFO(trainer.status().ToString());
  REQUIRE(trainer.ok());
  std::map<int64_t, double> losses;
  std::atomic<bool> stop{false};
  Status s = (*trainer)->Run(
      [&](const nlohmann::json& e) {
        if (events != nullptr) events->push_back(e);
        if (e["event"] == "step") {
          losses[e["step"].get<int64_t>()] = e["loss"].get<double>();
          if (stop_after > 0 && e["step"] == stop_after) stop = true;
        }
      },
      &stop);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return losses;
}

TEST_CASE("training on s3:// data and checkpoints resumes exactly like on files", "[s3][train]") {
  auto client = BucketClient();
  S3ObjectStore store(client, kBucket);
  kiln::testing::TempDir dir;
  const std::string manifest = kiln::testing::PrepareFortunes(dir);
  const auto whole = Train(kiln::testing::TinyTrainOptions(manifest));
  REQUIRE(whole.size() == 20);

  train::TrainOptions o = kiln::testing::TinyTrainOptions(UploadData(store, manifest, "data"));
  o.checkpoint_dir = "s3://kiln-test/train-resume";
  const auto first = Train(o, /*stop_after=*/10);
  CHECK(first.size() == 10);
  auto listed = store.List("train-resume/");
  REQUIRE(listed.ok());
  CHECK(listed->size() == 4);  // Steps 5 and 10: data and manifest each.
  std::vector<nlohmann::json> events;
  const auto second = Train(o, 0, &events);
  REQUIRE(second.size() == 10);
  for (const auto& [step, loss] : second) {
    INFO("step " << step);
    CHECK(loss == whole.at(step));  // Bit for bit.
  }
  bool resumed = false;
  for (const auto& e : events) resumed |= e["event"] == "resumed" && e["step"] == 10;
  CHECK(resumed);
}

TEST_CASE("kiln-worker exits with its codes for S3 errors", "[s3][process]") {
  BucketClient();
  auto env = ServerEnv();
  env["AWS_SECRET_ACCESS_KEY"] = "wrong";
  auto r = RunProcess({.argv = {KILN_WORKER_BIN, "train", "--data",
                                "s3://kiln-test/data/manifest.json", "--steps", "1"},
                       .env = env,
                       .timeout = std::chrono::minutes(2)});
  REQUIRE(r.ok());
  INFO(r->stderr_data);
  CHECK(r->exit_code == 6);
  CHECK(r->stderr_data.find("credentials were rejected") != std::string::npos);

  ThrottlingProxy proxy(ServerEnv()["AWS_ENDPOINT_URL"], 1000);
  env = ServerEnv();
  env["AWS_ENDPOINT_URL"] = proxy.url();
  r = RunProcess({.argv = {KILN_WORKER_BIN, "train", "--data", "s3://kiln-test/data/manifest.json",
                           "--steps", "1"},
                  .env = env,
                  .timeout = std::chrono::minutes(2)});
  REQUIRE(r.ok());
  INFO(r->stderr_data);
  CHECK(r->exit_code == 3);
  CHECK(r->stderr_data.find("SlowDown") != std::string::npos);
}

TEST_CASE("prepare writes to s3://, train reads it, eval loads the model from s3://",
          "[s3][process]") {
  BucketClient();
  const auto env = ServerEnv();
  kiln::testing::TempDir dir;
  auto worker = [&](std::vector<std::string> args) {
    args.insert(args.begin(), KILN_WORKER_BIN);
    auto r = RunProcess({.argv = args, .env = env, .timeout = std::chrono::minutes(3)});
    REQUIRE(r.ok());
    INFO(r->stdout_data << r->stderr_data);
    CHECK(r->exit_code == 0);
    return *r;
  };
  worker({"prepare", "--input", "/usr/share/games/fortunes/computers", "--output",
          "s3://kiln-test/e2e/data", "--val-fraction", "0.1"});
  S3ObjectStore store(Client(Options(env)), kBucket);
  CHECK(store.Stat("e2e/data/manifest.json").ok());
  CHECK(store.Stat("e2e/data/train_000000.bin").ok());
  worker({"train", "--data", "s3://kiln-test/e2e/data/manifest.json", "--layers", "1", "--heads",
          "2", "--channels", "32", "--batch", "2", "--seq", "16", "--steps", "4",
          "--checkpoint-every", "2", "--checkpoint-dir", "s3://kiln-test/e2e/ckpt"});
  CHECK(store.Stat("e2e/ckpt/step-00000004.manifest.json").ok());
  const std::string set = dir.Write("eval.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  auto r = worker({"eval", "--data", set, "--checkpoint", "s3://kiln-test/e2e/ckpt/", "--cache-dir",
                   dir.path() + "/cache"});
  CHECK(r.stdout_data.find("step-00000004.ckpt") != std::string::npos);
  CHECK(std::filesystem::exists(dir.path() + "/cache/step-00000004.ckpt"));
}

TEST_CASE("a gang whose fence a newer attempt holds in S3 stops with exit 8, writing nothing",
          "[s3][process][fence]") {
  // Attempt 1 of a job trains to step 4; attempt 2 (the job restarted
  // elsewhere) resumes and claims the fence; attempt 1 started again (the
  // gang of a member cut off from the hub) finds the fence taken.
  auto client = BucketClient();
  S3ObjectStore store(client, kBucket);
  kiln::testing::TempDir dir;
  const std::string data = UploadData(store, kiln::testing::PrepareFortunes(dir), "fence-data");
  auto train = [&](const std::string& fence, int steps) {
    auto r = RunProcess({.argv = {KILN_WORKER_BIN,
                                  "train",
                                  "--data",
                                  data,
                                  "--layers",
                                  "1",
                                  "--heads",
                                  "2",
                                  "--channels",
                                  "32",
                                  "--batch",
                                  "2",
                                  "--seq",
                                  "16",
                                  "--steps",
                                  std::to_string(steps),
                                  "--checkpoint-every",
                                  "2",
                                  "--checkpoint-dir",
                                  "s3://kiln-test/fence-run",
                                  "--fence",
                                  fence,
                                  "--termination-message-path",
                                  dir.path() + "/termination"},
                         .env = ServerEnv(),
                         .timeout = std::chrono::minutes(2)});
    REQUIRE(r.ok());
    return *r;
  };
  auto first = train("job-uid:1", 4);
  INFO(first.stderr_data);
  REQUIRE(first.exit_code == 0);
  auto second = train("job-uid:2", 8);
  INFO(second.stdout_data << second.stderr_data);
  REQUIRE(second.exit_code == 0);
  CHECK(second.stdout_data.find("\"event\":\"fenced\"") != std::string::npos);
  auto fence = store.Get("fence-run/fence.json");
  REQUIRE(fence.ok());
  CHECK(fence->find("\"attempt\":2") != std::string::npos);
  CHECK(fence->find("\"baseStep\":4") != std::string::npos);
  auto before = store.List("fence-run/");
  REQUIRE(before.ok());

  auto stale = train("job-uid:1", 12);
  INFO(stale.stderr_data);
  CHECK(stale.exit_code == worker::ToInt(worker::ExitCode::kSuperseded));
  CHECK(stale.stderr_data.find("job job-uid attempt 2 holds the checkpoints") != std::string::npos);
  std::ifstream in(dir.path() + "/termination");
  const auto message = nlohmann::json::parse(in, nullptr, false);
  CHECK(message.value("reason", "") == "Superseded");
  auto after = store.List("fence-run/");
  REQUIRE(after.ok());
  CHECK(after->size() == before->size());  // Nothing written.
  CHECK(store.Get("fence-run/fence.json").value() == *fence);
}

}  // namespace
}  // namespace kiln
